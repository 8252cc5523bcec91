#!/usr/bin/env bash
# A long run with everything on, to see what a bench run is too short to
# show: memory that creeps, a WAL or an outbox that keeps growing, latency
# that degrades as the tables grow.
#
#   scripts/soak.sh [OUT_DIR]        (default: ./soak-out)
#
# One node with PostgreSQL sync and Redis takes mixed traffic (reads and
# creates) at a fixed rate, in one-minute rounds of the load generator.
# After each round it records the round's figures (latency corrected for
# coordinated omission, and the service time without that correction), the
# node's resident memory, CPU, database and WAL file sizes and sync backlog,
# and the CPU of PostgreSQL, of Redis (when the script started it) and of
# the whole machine. At the end it waits for the backlog to
# drain and checks that PostgreSQL holds every reservation the node holds.
#
# Needs the release binaries (`cargo build --release`), jq, sqlite3, and a
# local PostgreSQL reachable as BENCH_POSTGRES (default:
# postgres://postgres@127.0.0.1:5432) with createdb/dropdb/psql on PATH; it
# creates and drops the database reservoir_soak. Redis: SOAK_REDIS (a URL)
# if set, else a redis-server of its own on port 16379. Knobs: SOAK_MINUTES
# (default 30), SOAK_RATE (requests/s, default 6000), SOAK_READ_PERCENT
# (default 80).
#
# Output: OUT_DIR/soak.tsv (one line per minute), OUT_DIR/round-N.json (the
# load generator's report of each round), OUT_DIR/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-./soak-out}
MINUTES=${SOAK_MINUTES:-30}
RATE=${SOAK_RATE:-6000}
READS=${SOAK_READ_PERCENT:-80}
DB=reservoir_soak
source scripts/node.sh
mkdir -p "$OUT"
WORK=$(mktemp -d)
REDIS_PID=""

cleanup() {
    stop_server
    [[ -n $REDIS_PID ]] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    dropdb --maintenance-db="$PG/postgres" --if-exists "$DB" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -n ${SOAK_REDIS:-} ]]; then
    REDIS=$SOAK_REDIS
else
    redis-server --port 16379 --save "" --appendonly no --dir "$WORK" >"$OUT/redis.log" 2>&1 &
    REDIS_PID=$!
    REDIS=redis://127.0.0.1:16379
    for _ in $(seq 1 50); do
        redis-cli -p 16379 ping >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

dropdb --maintenance-db="$PG/postgres" --if-exists "$DB"
createdb --maintenance-db="$PG/postgres" "$DB"

DATA=$WORK/node
start "$DATA" RESERVOIR_POSTGRES_URL="$PG/$DB" RESERVOIR_REDIS_URL="$REDIS"

mib() { echo $(( ${1:-0} / 1048576 )); }
# ticks PID...: CPU ticks of the processes, with their reaped children's
# (PostgreSQL's ended backends count toward the postmaster).
ticks() {
    local pid
    for pid; do cat "/proc/$pid/stat" 2>/dev/null; done |
        awk '{ t += $14 + $15 + $16 + $17 } END { print t + 0 }'
}
pg_ticks() { ticks $(pgrep -x postgres); }
redis_ticks() { ticks $REDIS_PID; }
# The machine: busy and steal ticks, all ticks (the first line of /proc/stat).
machine() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
# metric NAME: the value of an unlabelled gauge on /metrics.
metric() { curl -sf "$TARGET/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
hz=$(getconf CLK_TCK)
cpu_s() { awk -v hz="$hz" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$SERVER/stat"; }
kib() { awk -v k="$1" '$1 == k":" { print int($2 / 1024) }' "/proc/$SERVER/status"; }

printf 'minute\trps\tp50_ms\tp99_ms\tmax_ms\tnot_2xx\trss_mib\tpeak_rss_mib\tcpu_s\tdb_mib\twal_mib\tpending\toldest_pending_s\tservice_p99_ms\tpg_cpu_s\tredis_cpu_s\tmachine_busy_pct\tsteal_pct\n' >"$OUT/soak.tsv"
for minute in $(seq 1 "$MINUTES"); do
    pg0=$(pg_ticks) redis0=$(redis_ticks)
    read -r busy0 steal0 all0 < <(machine)
    "$BIN/loadgen" --target $TARGET --token $TOKEN --scenario mixed --read-percent "$READS" \
        --connections 64 --rate "$RATE" --duration 60s --json >"$OUT/round-$minute.json" 2>>"$OUT/loadgen.log"
    jq -r --arg m "$minute" '.service | [$m, (.rps | floor),
            (.latency.p50_us / 1000), (.latency.p99_us / 1000), (.latency.max_us / 1000),
            ([.status | to_entries[] | select(.key | test("^2") | not) | .value] | add // 0)] | @tsv' \
        "$OUT/round-$minute.json" | tr -d '\n' >>"$OUT/soak.tsv"
    printf '\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(kib VmRSS)" "$(kib VmHWM)" "$(cpu_s)" \
        "$(mib "$(stat -c %s "$DATA/reservoir.db")")" "$(mib "$(stat -c %s "$DATA/reservoir.db-wal" 2>/dev/null)")" \
        "$(metric reservoir_sync_pending)" "$(metric reservoir_sync_oldest_pending_age_seconds)" | tr -d '\n' >>"$OUT/soak.tsv"
    read -r busy1 steal1 all1 < <(machine)
    # Service time: from sending a request to its answer, without the wait
    # for a free connection that the corrected latency above includes.
    printf '\t%s\t%s\t%s\t%s\t%s\n' \
        "$(jq '.service.service_time.p99_us / 1000' "$OUT/round-$minute.json")" \
        "$(echo "$pg0 $(pg_ticks) $hz" | awk '{ printf "%.1f", ($2 - $1) / $3 }')" \
        "$(echo "$redis0 $(redis_ticks) $hz" | awk '{ printf "%.1f", ($2 - $1) / $3 }')" \
        "$(( 100 * (busy1 - busy0) / (all1 - all0) ))" "$(( 100 * (steal1 - steal0) / (all1 - all0) ))" >>"$OUT/soak.tsv"
    tail -n 1 "$OUT/soak.tsv" >&2
done

# Converged: the backlog drains, and PostgreSQL holds what the node holds.
for _ in $(seq 1 600); do
    [[ $(metric reservoir_sync_pending) == 0 ]] && break
    sleep 1
done
local_rows=$(sqlite3 "file:$DATA/reservoir.db?mode=ro" "SELECT count(*) FROM reservations")
remote_rows=$(psql -At "$PG/$DB" -c "SELECT count(*) FROM reservations")
{
    echo "minutes $MINUTES, rate $RATE req/s, reads $READS %"
    echo "pending after the load: $(metric reservoir_sync_pending)"
    echo "reservations on the node: $local_rows, in PostgreSQL: $remote_rows"
    awk -F'\t' 'BEGIN { p99 = hwm = wal = pend = bad = 0 } NR > 1 { if ($4 > p99) p99 = $4; if ($8 > hwm) hwm = $8; if ($11 > wal) wal = $11;
                         if ($12 > pend) pend = $12; bad += $6 }
        END { printf "worst minute p99 %s ms, peak RSS %s MiB, largest WAL %s MiB, largest backlog %s rows, non-2xx %d\n",
              p99, hwm, wal, pend, bad }' "$OUT/soak.tsv"
} | tee "$OUT/summary.txt"
[[ $local_rows == "$remote_rows" ]]
