#!/usr/bin/env bash
# What the spill log costs a query: the Query baseline against `keel up`
# with inference records through serving's spill log (the default: fsynced
# in groups on disk) and through the in-memory queue. Telemetry is off on
# both sides, so the trace store's own cost does not drown the difference.
# The bar: p50 and QPS cost <= 5%.
# Usage: loadtests/spill_cost.sh [rounds] [duration]
exec "$(dirname "$0")/compare_query.sh" \
  "memory queue" "KEEL_TELEMETRY__ENABLED=false KEEL_SERVING__INFERENCE_LOG=memory" \
  "spill log" "KEEL_TELEMETRY__ENABLED=false KEEL_SERVING__INFERENCE_LOG=spill" \
  5 "${1:-3}" "${2:-15s}"
