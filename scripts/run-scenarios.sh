#!/usr/bin/env bash
# Runs `molecule test` for each scenario given, goes on after a failure so one
# run shows every broken scenario, and ends with each scenario's wall time.
#
# SCENARIO_LANES=2 (the default) runs the last scenario given (the stack, the
# longest) beside the others, which run one after another: most of a scenario's
# time is spent waiting on services, restarts and jobs, not on the CPU.
# SCENARIO_LANES=1 runs them all one after another. Each scenario's output is
# printed whole when it ends, so lanes never interleave.
set -uo pipefail

[ $# -gt 0 ] || { echo "usage: run-scenarios.sh <scenario>..." >&2; exit 2; }
lanes=${SCENARIO_LANES:-2}
case "$lanes" in 1 | 2) ;; *) echo "SCENARIO_LANES must be 1 or 2, not $lanes" >&2; exit 2 ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {
  local scenario=$1 t0 status
  t0=$(date +%s)
  if molecule test -s "$scenario" >"$work/$scenario.log" 2>&1; then status=passed; else status=FAILED; fi
  {
    flock 9
    echo "=== molecule test -s $scenario ($status)"
    cat "$work/$scenario.log"
  } 9>"$work/print.lock"
  printf '%-12s %-7s %5ss\n' "$scenario" "$status" "$(($(date +%s) - t0))" >"$work/$scenario.result"
}

lane() {
  for scenario in "$@"; do run "$scenario"; done
}

started=$(date +%s)
if [ "$lanes" = 2 ] && [ $# -gt 1 ]; then
  lane "${@: -1}" &
  lane "${@:1:$#-1}" &
  wait
else
  lane "$@"
fi

echo
echo "=== scenario     result  wall time"
failed=0
for scenario in "$@"; do
  if [ -f "$work/$scenario.result" ]; then
    printf '    %s' "$(cat "$work/$scenario.result")"; echo
    grep -q FAILED "$work/$scenario.result" && failed=1
  else
    printf '    %-12s %-7s\n' "$scenario" "not run"; failed=1
  fi
done
printf '    %-12s %-7s %5ss\n' total "" "$(($(date +%s) - started))"
exit "$failed"
