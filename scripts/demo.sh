#!/usr/bin/env bash
# `make demo` / `make demo-down`: converge the demo scenario into local
# containers (the same roles and playbooks production uses) and say how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${DEMO_SCENARIO:-rabbitmq}

case "${1:-}" in
  up)
    # converge is idempotent: a second `make demo` re-applies and changes nothing.
    molecule converge -s "$scenario"
    echo
    echo "The broker is up, one node per Debian release:"
    for node in $(docker ps --filter "label=molecule.scenario=$scenario" --format '{{.Names}}' | sort); do
      address=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$node")
      echo "  $node  amqp://app:<password>@$address:5672/%2Fapp"
    done
    echo
    echo "Passwords are in molecule/$scenario/molecule.yml (test values). Try:"
    echo "  docker exec $node rabbitmqctl list_queues -p /app name messages consumers"
    echo "  docker exec $node rabbitmq-diagnostics alarms"
    echo "  docker exec $node journalctl -u rabbitmq-server -f"
    echo "Tear it down with: make demo-down"
    ;;
  down)
    molecule destroy -s "$scenario"
    ;;
  *)
    echo "usage: demo.sh up|down" >&2
    exit 2
    ;;
esac
