#!/usr/bin/env bash
# What PostgreSQL spends applying a drain's batches: CPU time of the backend
# per call of `reservoir_apply_rows` with 1,000 new reservations over 1,000
# resources, as a node sends a backlog (BENCHMARKS.md, "the psql harness").
#
#   scripts/apply_cost.sh [MIGRATIONS_DIR]   (default: migrations/postgres)
#
# Applies the migrations of MIGRATIONS_DIR to a new database
# (reservoir_apply_cost, dropped at the end), stores 60 batches as arrays,
# applies 5 to warm up and times the other 55 from the backend's
# /proc/PID/stat, so PostgreSQL must run on this machine and its
# superuser must be able to read that file (pg_read_file). To compare two
# versions of the function, copy the migrations into two folders and run
# each a few times, alternating. Needs psql, createdb and dropdb on PATH
# and PostgreSQL as BENCH_POSTGRES (default: postgres://postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."

MIGRATIONS=${1:-migrations/postgres}
PG=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
DB=reservoir_apply_cost
URL="$PG/$DB"
export PGOPTIONS="-c client_min_messages=warning"

dropdb --maintenance-db="$PG/postgres" --if-exists "$DB"
createdb --maintenance-db="$PG/postgres" "$DB"
trap 'dropdb --maintenance-db="$PG/postgres" --if-exists "$DB"' EXIT
for migration in "$MIGRATIONS"/*.sql; do
    psql -q "$URL" -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done

psql -q "$URL" -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
INSERT INTO resources (id, name, capacity, timezone, slot_minutes, version, origin_node, created_at, updated_at)
SELECT gen_random_uuid(), 'resource ' || g, 4, 'UTC', 30, 1, 'harness', now(), now()
FROM generate_series(1, 1000) AS g;
CREATE TABLE harness_resources AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM resources;
-- Batch b books the half hour b of every resource: new ids at version 1,
-- seven users, confirmed, nothing in the way.
CREATE TABLE harness_batches AS
SELECT b, array_agg(gen_random_uuid() ORDER BY i) AS ids, array_agg(r.id ORDER BY i) AS resource_ids,
       array_agg('user ' || (i % 7) ORDER BY i) AS user_ids,
       array_agg((1893456000 + b * 1800)::bigint * 1000000 ORDER BY i) AS starts,
       array_agg((1893456000 + b * 1800 + 1800)::bigint * 1000000 ORDER BY i) AS ends,
       array_agg(1 ORDER BY i) AS parties, array_agg('confirmed'::text ORDER BY i) AS statuses,
       array_agg(1::bigint ORDER BY i) AS versions, array_agg(NULL::text ORDER BY i) AS notes,
       array_agg(NULL::text ORDER BY i) AS metadata, array_agg(md5(b || '/' || i) ORDER BY i) AS hashes,
       array_agg(1764547200000000::bigint ORDER BY i) AS created,
       array_agg(1764547200000000::bigint ORDER BY i) AS updated
FROM generate_series(1, 60) AS b CROSS JOIN generate_series(1, 1000) AS i
JOIN harness_resources AS r ON r.n = i
GROUP BY b;
-- One transaction per batch, as a node's calls are.
CREATE PROCEDURE harness_apply(first integer, last integer) LANGUAGE plpgsql AS $$
DECLARE
    x record;
BEGIN
    FOR x IN SELECT * FROM harness_batches WHERE b BETWEEN first AND last ORDER BY b LOOP
        PERFORM count(*) FROM reservoir_apply_rows('harness', '[]'::jsonb, x.ids, x.resource_ids, x.user_ids,
            x.starts, x.ends, x.parties, x.statuses, x.versions, x.notes, x.metadata, x.hashes, x.created,
            x.updated);
        COMMIT;
    END LOOP;
END;
$$;
SQL

psql -q "$URL" -v ON_ERROR_STOP=1 -At <<'SQL'
SELECT pg_backend_pid() AS pid \gset
CREATE FUNCTION pg_temp.cpu_ticks(pid integer) RETURNS bigint LANGUAGE sql
    RETURN split_part(pg_read_file('/proc/' || pid || '/stat'), ' ', 14)::bigint
         + split_part(pg_read_file('/proc/' || pid || '/stat'), ' ', 15)::bigint;
CALL harness_apply(1, 5);
SELECT pg_temp.cpu_ticks(:pid) AS before \gset
CALL harness_apply(6, 60);
SELECT format('%s ms of backend CPU per batch of 1,000 rows (55 batches, %s rows stored)',
              round((pg_temp.cpu_ticks(:pid) - :before) * 1000.0 / 100 / 55, 1),
              (SELECT count(*) FROM reservations));
SQL
