#!/usr/bin/env bash
# What tracing costs a query: the Query baseline against `keel up` with
# telemetry on (every span exported to Keel's own trace store, the default)
# and off (`KEEL_TELEMETRY__ENABLED=false`). The bar: p50 and QPS cost <= 10%.
# Usage: loadtests/tracing_cost.sh [rounds] [duration]
exec "$(dirname "$0")/compare_query.sh" \
  "tracing off" "KEEL_TELEMETRY__ENABLED=false" \
  "tracing on" "KEEL_TELEMETRY__ENABLED=true" \
  10 "${1:-3}" "${2:-15s}"
