#!/usr/bin/env bash
# Runs `molecule test` for each scenario given, goes on after a failure so one
# run shows every broken scenario, and ends with each scenario's wall time.
set -uo pipefail

[ $# -gt 0 ] || { echo "usage: run-scenarios.sh <scenario>..." >&2; exit 2; }

results=()
failed=0
started=$(date +%s)
for scenario in "$@"; do
  echo "=== molecule test -s $scenario"
  t0=$(date +%s)
  if molecule test -s "$scenario"; then status=passed; else status=FAILED; failed=1; fi
  results+=("$(printf '%-12s %-7s %5ss' "$scenario" "$status" "$(($(date +%s) - t0))")")
done

echo
echo "=== scenario     result  wall time"
printf '    %s\n' "${results[@]}"
printf '    %-12s %-7s %5ss\n' total "" "$(($(date +%s) - started))"
exit "$failed"
