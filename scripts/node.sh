# Sourced by scripts/bench.sh and scripts/soak.sh: one release node on a
# fixed loopback port, started and stopped the same way by both. The caller
# sets OUT (where server.log goes) before calling `start`.

TOKEN=bench-token
BIN=target/release
PORT=18080
TARGET=http://127.0.0.1:$PORT
PG=${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
SERVER=""

stop_server() {
    if [[ -n $SERVER ]]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        SERVER=""
    fi
}

# start DATA_DIR [VAR=value ...]: a server on $PORT, waits until it answers.
start() {
    local data=$1
    shift
    mkdir -p "$data"
    env RESERVOIR_DATA_DIR="$data" RESERVOIR_ADMIN_TOKEN=$TOKEN \
        RESERVOIR_LISTEN=127.0.0.1:$PORT RUST_LOG=warn "$@" \
        "$BIN/reservoir" >>"$OUT/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 600); do
        curl -sf "$TARGET/health" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "the server did not answer on $TARGET; see $OUT/server.log" >&2
    exit 1
}
