#!/usr/bin/env bash
# `make demo` / `make demo-down`: converge the whole stack into local
# containers (the same site.yml production uses) and say how to use it.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=stack
port=${STACK_WEB_PORT:-8080}
export STACK_WEB_PORT=$port

case "${1:-}" in
  up)
    # converge is idempotent: a second `make demo` re-applies and changes nothing.
    molecule converge -s "$scenario"
    cat <<TEXT

The stack is up: broker (its store on its own volume), database, web, two
workers (beat on the first), and a monitoring host, each in its own container.

  Web app        http://localhost:$port/health/
  Prometheus     http://localhost:${STACK_PROMETHEUS_PORT:-9090}/alerts
  Alertmanager   http://localhost:${STACK_ALERTMANAGER_PORT:-9093}/
  Flower         http://localhost:${STACK_FLOWER_PORT:-5556}/  (user ops, fixture-flower-password)
  RabbitMQ       http://localhost:${STACK_RABBITMQ_PORT:-15672}/  (user ops, fixture-ops-password)
  Start a job    curl -X POST 'http://localhost:$port/jobs/?parts=500'
  Follow it      curl http://localhost:$port/jobs/<id>/
  Queues         docker exec stack-broker rabbitmqctl list_queues -p workbench name messages consumers
  Alarms         docker exec stack-broker rabbitmq-diagnostics alarms
  Worker logs    docker exec stack-worker1 tail -f /var/log/celery/default.log
  Beat log       docker exec stack-worker1 tail -f /var/log/celery/beat.log
  Notifications  docker exec stack-monitor cat /var/lib/webhook-sink/received.jsonl
  Deploy history docker exec stack-web cat /srv/workbench/deploys.log

Test passwords are in molecule/shared/inventory/group_vars. Tear it down with: make demo-down
TEXT
    ;;
  down)
    molecule destroy -s "$scenario"
    ;;
  *)
    echo "usage: demo.sh up|down" >&2
    exit 2
    ;;
esac
