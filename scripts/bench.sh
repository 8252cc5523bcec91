#!/usr/bin/env bash
# Runs every load-generator measurement of BENCHMARKS.md in one go, in the
# order the report's tables were taken, and keeps each run's output.
#
#   scripts/bench.sh [OUT_DIR]        (default: ./bench-out)
#
# Needs the release binaries (`cargo build --release`) and, for the sync and
# drain steps, a local PostgreSQL reachable as BENCH_POSTGRES (default:
# postgres://postgres@127.0.0.1:5432) with createdb/dropdb on PATH. It
# creates and drops the databases reservoir_bench_sync and
# reservoir_bench_drain. Knobs (environment): BENCH_DURATION (default 20s,
# per side, in 2 rounds), BENCH_ROWS (default 1000000, the stored-data
# step). Nothing else should run on the machine meanwhile: the figures are
# ratios to a baseline measured in the same run, but noise still shows.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-./bench-out}
DURATION=${BENCH_DURATION:-20s}
ROWS=${BENCH_ROWS:-1000000}
source scripts/node.sh
mkdir -p "$OUT"
WORK=$(mktemp -d)

trap 'stop_server; rm -rf "$WORK"' EXIT

# load NAME SCENARIO ROUNDS [flags...]: one loadgen run against the server.
load() {
    local name=$1 scenario=$2 rounds=$3
    shift 3
    echo "== $name" >&2
    "$BIN/loadgen" --target $TARGET --token $TOKEN --scenario "$scenario" \
        --connections 64 --duration "$DURATION" --rounds "$rounds" --baseline \
        --server-pid "$SERVER" "$@" >"$OUT/$name.txt" 2>&1
}

# seed_and_drain PREFIX DATA_DIR ROWS DB: seed ROWS reservations into a
# node without PostgreSQL and stop it, then restart it with the fresh
# database DB and wait until its backlog has drained. Leaves that server
# running. Output: PREFIXseed.txt, PREFIXdrain.txt.
seed_and_drain() {
    local prefix=$1 data=$2 rows=$3 db=$4
    start "$data"
    echo "== ${prefix}seed" >&2
    "$BIN/loadgen" seed --target $TARGET --token $TOKEN --reservations "$rows" \
        --resources 1000 --server-pid "$SERVER" >"$OUT/${prefix}seed.txt" 2>&1
    stop_server
    fresh_db "$db"
    start "$data" RESERVOIR_POSTGRES_URL="$PG/$db"
    echo "== ${prefix}drain" >&2
    "$BIN/loadgen" drain --target $TARGET --token $TOKEN --timeout 600s \
        --server-pid "$SERVER" >"$OUT/${prefix}drain.txt" 2>&1
    # The node's CPU over its whole life (start-up backfill included).
    awk '{printf "node CPU %.2f s (user + system)\n", ($14 + $15) / 100}' \
        "/proc/$SERVER/stat" >>"$OUT/${prefix}drain.txt"
}

drop_db() {
    dropdb --maintenance-db="$PG/postgres" --if-exists "$1"
}

fresh_db() {
    drop_db "$1"
    createdb --maintenance-db="$PG/postgres" "$1"
}

date -u >"$OUT/started.txt"

# 1. A fresh server, every scenario, then the fixed-rate runs.
start "$WORK/fresh"
for scenario in create get list mixed; do
    load "$scenario" "$scenario" 2
done
load availability1 availability 2 --window-days 1
load availability7 availability 1 --window-days 7
load rate_get get 2 --rate 20000
load rate_create create 2 --rate 8000
stop_server

# 2. Sync on (a fresh database), then sync off right after.
fresh_db reservoir_bench_sync
start "$WORK/sync" RESERVOIR_POSTGRES_URL="$PG/reservoir_bench_sync"
load sync_on create 2 --watch-sync
stop_server
start "$WORK/nosync"
load sync_off create 2
stop_server
drop_db reservoir_bench_sync

# 2b. Sync on after a restart: a node that stored 60,000 rows and shut down.
#     Versions that kept SQLite's planner statistics planned the outbox read
#     as a full scan here (BENCHMARKS.md, 2026-12-01 15:08 UTC). Restarted
#     with PostgreSQL, it drains its backlog, then takes the same creates as
#     step 2.
seed_and_drain restart_ "$WORK/restart" 60000 reservoir_bench_sync
load restart_sync_on create 2 --watch-sync
stop_server
drop_db reservoir_bench_sync

# 3. synchronous=full.
start "$WORK/full" RESERVOIR_SQLITE_SYNCHRONOUS=full
load full create 2
stop_server

# 4. ROWS stored: seed, drain that backlog into PostgreSQL, then the
#    scenarios on the stored data (one round each).
seed_and_drain "" "$WORK/stored" "$ROWS" reservoir_bench_drain
stop_server
drop_db reservoir_bench_drain
start "$WORK/stored"
for scenario in create get mixed list; do
    load "stored_$scenario" "$scenario" 1
done
stop_server

date -u >"$OUT/ended.txt"
grep -H -E '^(service|baseline|ratio)|RSS|outbox|drained|seeded|node CPU' "$OUT"/*.txt
