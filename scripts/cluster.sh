#!/usr/bin/env bash
# Runs the docker-compose topology from local binaries, for machines without
# a Docker engine: two Reservoir nodes (ports 8081, 8082) on the local
# PostgreSQL and Redis, and nginx on 8080 in front when it is installed.
#
#   scripts/cluster.sh up       build, start everything, wait until healthy
#   scripts/cluster.sh status   health of each node
#   scripts/cluster.sh down     stop what `up` started
#
# Settings (environment): RESERVOIR_ADMIN_TOKEN (default: a dev token),
# CLUSTER_POSTGRES_URL (default: postgres://postgres@127.0.0.1:5432/reservoir_cluster,
# created if missing), CLUSTER_REDIS_URL (default: redis://127.0.0.1:6379/),
# CLUSTER_DIR (default: ./cluster-data).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${CLUSTER_DIR:-./cluster-data}
TOKEN=${RESERVOIR_ADMIN_TOKEN:-dev-admin-token}
PG_URL=${CLUSTER_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/reservoir_cluster}
REDIS_URL=${CLUSTER_REDIS_URL:-redis://127.0.0.1:6379/}
NODES=("node-a:8081" "node-b:8082")
LB_PORT=8080

start_node() {
  local name=$1 port=$2
  mkdir -p "$DIR/$name"
  RESERVOIR_LISTEN=127.0.0.1:$port \
  RESERVOIR_DATA_DIR="$DIR/$name" \
  RESERVOIR_NODE_ID=$name \
  RESERVOIR_ADMIN_TOKEN=$TOKEN \
  RESERVOIR_POSTGRES_URL=$PG_URL \
  RESERVOIR_REDIS_URL=$REDIS_URL \
  RESERVOIR_LOG_FORMAT=json \
    nohup target/release/reservoir >"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

wait_healthy() {
  local port=$1
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node on port $port did not become healthy; see $DIR/*.log" >&2
  return 1
}

up() {
  cargo build --release --bin reservoir
  mkdir -p "$DIR"
  # The database the nodes share (ignored when it exists or psql is absent).
  if command -v psql >/dev/null; then
    local admin_url=${PG_URL%/*}/postgres db=${PG_URL##*/}
    psql "$admin_url" -qtc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
      || psql "$admin_url" -qc "CREATE DATABASE \"$db\"" || true
  fi
  for node in "${NODES[@]}"; do start_node "${node%%:*}" "${node##*:}"; done
  for node in "${NODES[@]}"; do wait_healthy "${node##*:}"; done
  if command -v nginx >/dev/null; then
    sed -e "s/server node-a:8080/server 127.0.0.1:8081/" \
        -e "s/server node-b:8080/server 127.0.0.1:8082/" \
        -e "s/listen 8080;/listen $LB_PORT;/" \
        -e "s#^worker_processes auto;#worker_processes auto;\npid $(realpath "$DIR")/nginx.pid;\nerror_log $(realpath "$DIR")/nginx.log;#" \
        deploy/nginx.conf >"$DIR/nginx.conf"
    nginx -c "$(realpath "$DIR")/nginx.conf"
    wait_healthy $LB_PORT
    echo "cluster up: load balancer http://127.0.0.1:$LB_PORT, nodes :8081 and :8082"
  else
    echo "cluster up: nodes http://127.0.0.1:8081 and :8082 (install nginx for the load balancer on :$LB_PORT)"
  fi
}

down() {
  if [ -f "$DIR/nginx.pid" ]; then
    nginx -c "$(realpath "$DIR")/nginx.conf" -s quit 2>/dev/null || kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
  fi
  for node in "${NODES[@]}"; do
    local pidfile="$DIR/${node%%:*}.pid"
    if [ -f "$pidfile" ]; then
      kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  echo "cluster down (data kept in $DIR)"
}

status() {
  for node in "${NODES[@]}"; do
    printf '%s: ' "${node%%:*}"
    curl -fsS "http://127.0.0.1:${node##*:}/health/detailed" || echo "down"
    echo
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
