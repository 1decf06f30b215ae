"""The stack scenario's hosts, secrets and job helpers, shared by its test files."""

import json
import shutil
import time
import urllib.parse

import pytest
import yaml
from bundletest.common import APP, PROJECT, http_json, on

WORKERS = ["stack-worker1", "stack-worker2"]
BEAT = "stack-worker1"  # beat shares the first worker's host, as in the production inventory
DJANGO_HOSTS = ["stack-web", *WORKERS]
# Every unit of the application, per host.
APP_UNITS = {
    "stack-web": ["gunicorn.service"],
    "stack-worker1": ["celery-worker@default.service", "celery-beat.service"],
    "stack-worker2": ["celery-worker@default.service"],
}
# Units whose start time must not move when a worker node is added.
UNITS = {
    "stack-broker": ["rabbitmq-server.service"],
    "stack-db": ["postgresql@17-main.service"],  # Debian 13's cluster
    "stack-web": ["gunicorn.service", "nginx.service"],
    "stack-worker1": ["celery-worker@default.service", "celery-beat.service"],
    "stack-worker2": ["celery-worker@default.service"],
}
# The scenario's fixtures, as its inventory links them.
FIXTURES = {group: yaml.safe_load((PROJECT / "molecule/shared/inventory/group_vars" / f"{group}.yml").read_text())
            for group in ("all", "broker")}
DB_PASSWORD = FIXTURES["all"]["fixture_db_password"]
MQ_PASSWORD = FIXTURES["all"]["fixture_mq_password"]
# As written, and as they appear URL-encoded in the connection strings.
SECRETS = [DB_PASSWORD, MQ_PASSWORD, urllib.parse.quote(DB_PASSWORD, safe=""), urllib.parse.quote(MQ_PASSWORD, safe=""),
           FIXTURES["all"]["fixture_ops_password"], FIXTURES["all"]["fixture_flower_password"], FIXTURES["all"]["django_secret_key"],
           FIXTURES["broker"]["rabbitmq_erlang_cookie"]]


def start_job(host, parts):
    status, body = http_json(host, f"/jobs/?parts={parts}", method="POST")
    assert status == 202, body
    return body["job"]


def job_state(host, job):
    return http_json(host, f"/jobs/{job}/")[1]


def wait_finished(host, jobs, timeout=600, stalled_after=120):
    """Each job's state once it finished; fails the test when one did not within timeout, or as soon as
    no part of the pending jobs moved for stalled_after seconds (a lost task never finishes)."""
    deadline = time.monotonic() + timeout
    pending, states = set(jobs), {}
    progress, moved = None, time.monotonic()
    while pending and time.monotonic() < deadline and time.monotonic() - moved < stalled_after:
        for job in list(pending):
            status, state = http_json(host, f"/jobs/{job}/")
            if status == 200:
                states[job] = state
                if state["finished"]:
                    pending.discard(job)
        now = sum(state["done"] + state.get("failed", 0) for state in states.values())
        if now != progress:
            progress, moved = now, time.monotonic()
        time.sleep(1)
    if pending:
        pytest.fail(f"{len(pending)} job(s) did not finish: {[states.get(job) for job in sorted(pending)[:3]]}")
    return states


def queue_depths(host, vhost=APP):
    """{queue: messages ready + unacknowledged} on the broker."""
    out = on(host, "stack-broker").check_output(
        f"rabbitmqctl --quiet list_queues -p {vhost} name messages --formatter json")
    return {queue["name"]: queue["messages"] for queue in json.loads(out)}


def release_with_new_task(tmp_path, name, version=None):
    """The demo project with a task it did not have, which every job's items now go through:
    a release that publishes messages the previous release's workers cannot run. A version other than
    the name makes another release of the same code."""
    version = version or name
    source = tmp_path / version
    shutil.copytree(PROJECT / "files/demo-project", source, ignore=shutil.ignore_patterns("__pycache__"))
    with open(source / "analysis/tasks.py", "a") as tasks:
        tasks.write(
            f"\n\n@shared_task(bind=True, base=ItemTask, **ITEM_TASK_OPTIONS)\n"
            f"def analyse_item_{name}(self, item_id):\n"
            f"    return analyse(self, item_id)\n")
    with open(source / "analysis/jobs.py", "a") as jobs:
        jobs.write(f"\nITEM_TASK = tasks.analyse_item_{name}\n")
    (source / "analysis/static/analysis/version.txt").write_text(f"{version}\n")
    return source


# --- the monitoring host -------------------------------------------------------

MONITOR = "stack-monitor"


def monitor_api(host, port, path):
    """JSON from Prometheus (9090) or Alertmanager (9093), which listen on the monitoring host's loopback."""
    fetch = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"
    return json.loads(on(host, MONITOR).check_output(f"python3 -c '{fetch}' 'http://127.0.0.1:{port}{path}'"))


def firing(host, alertname):
    """The alert's firing instances in Prometheus (their labels)."""
    alerts = monitor_api(host, 9090, "/api/v1/alerts")["data"]["alerts"]
    return [a["labels"] for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def notifications(host, alertname, since=""):
    """The webhook notifications the scenario's receiver got for one alert's group, oldest first; with since
    (an RFC 3339 time), only those about alerts that started after it."""
    lines = on(host, MONITOR).check_output("cat /var/lib/webhook-sink/received.jsonl 2>/dev/null || true").splitlines()
    return [n for n in map(json.loads, lines) if n["groupLabels"].get("alertname") == alertname
            and any(alert["startsAt"] > since for alert in n["alerts"])]
