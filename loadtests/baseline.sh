#!/usr/bin/env bash
# Measures the Query baseline against `keel up` on SQLite, then on Postgres,
# with the same release build, one after the other, and prints one markdown
# table per backend. Usage: loadtests/baseline.sh [duration] [open-loop rate]
#   PG_URL (default postgres://postgres@127.0.0.1:5432) is the server that
#   gets five fresh databases keel_lt_<service>.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20s}"
rate="${2:-300}"
pg="${PG_URL:-postgres://postgres@127.0.0.1:5432}"

cargo build --release -p keel -p keel-loadtests
keel=target/release/keel
loadtest=target/release/keel-loadtest
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  keel="$CARGO_TARGET_DIR/release/keel"
  loadtest="$CARGO_TARGET_DIR/release/keel-loadtest"
fi
# keel up loads minilm and smollm2 at start: fetched once into .models.
"$keel" models fetch --dir "$PWD/.models" >/dev/null
export KEEL_MODELS_DIR="$PWD/.models"

wait_for_serving() {
  for _ in $(seq 1 100); do
    if curl -fsS http://127.0.0.1:7202/healthz >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "keel up did not become healthy" >&2
  return 1
}

run_matrix() {
  local backend="$1"
  "$loadtest" setup >/dev/null
  echo
  echo "### $backend"
  echo
  echo "| mode | concurrency/rate | requests | errors | QPS | p50 ms | p95 ms | p99 ms | max ms |"
  echo "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
  for concurrency in 1 16 64; do
    "$loadtest" run --mode closed --concurrency "$concurrency" --duration "$duration" --warmup 3s 2>/dev/null | tail -1
  done
  "$loadtest" run --mode open --rate "$rate" --duration "$duration" --warmup 3s 2>/dev/null | tail -1
}

data_dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$data_dir"' EXIT

"$keel" up --data-dir "$data_dir/sqlite" 2>"$data_dir/sqlite.log" &
keel_pid=$!
wait_for_serving
run_matrix SQLite
kill "$keel_pid"; wait "$keel_pid" || true

for service in registry vector_index serving feedback monitoring; do
  psql "$pg/postgres" -qc "drop database if exists keel_lt_$service" >/dev/null
  psql "$pg/postgres" -qc "create database keel_lt_$service" >/dev/null
done
KEEL_REGISTRY__DATABASE_URL="$pg/keel_lt_registry" \
KEEL_VECTOR_INDEX__DATABASE_URL="$pg/keel_lt_vector_index" \
KEEL_SERVING__DATABASE_URL="$pg/keel_lt_serving" \
KEEL_FEEDBACK__DATABASE_URL="$pg/keel_lt_feedback" \
KEEL_MONITORING__DATABASE_URL="$pg/keel_lt_monitoring" \
  "$keel" up --data-dir "$data_dir/postgres" 2>"$data_dir/postgres.log" &
keel_pid=$!
wait_for_serving
run_matrix Postgres
kill "$keel_pid"; wait "$keel_pid" || true
