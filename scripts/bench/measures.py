"""What the bench measures on the containers: the plain-script floor, Celery's publish and drain against raw
AMQP, and a worker's memory with DEBUG on and off."""

import json
import os
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from harness import APP, HERE, ROOT, TIERS, docker, fixtures, inventory, run

THROUGHPUT_MESSAGES = int(os.environ.get("BENCH_MESSAGES", "10000"))
# Celery's prefetch on the worker node: concurrency 2 x prefetch multiplier 1.
PREFETCH = 2
MEMORY_TASKS, MEMORY_BATCH, MEMORY_QUERIES = 2000, 250, 3
# Small enough that a child recycles several times within MEMORY_TASKS; the
# warm-up goes past the first recycling so every case starts from a steady state.
MEMORY_MAX_TASKS_PER_CHILD = 500
MEMORY_WARMUP = MEMORY_MAX_TASKS_PER_CHILD + 100
MEMORY_CASES = [("on", 0), ("on", MEMORY_MAX_TASKS_PER_CHILD), ("off", 0), ("off", MEMORY_MAX_TASKS_PER_CHILD)]


# --- the floor: the same packages and services, no Ansible -------------

def floor(run_index):
    """Each tier's floor.sh in site.yml's order, one tier at a time like site.yml; seconds per tier."""
    values = fixtures(inventory())
    env = {
        "FLOOR_SECRET_KEY": values["django_secret_key"],
        "FLOOR_DATABASE_URL": values["django_database_url"],
        "FLOOR_BROKER_URL": values["django_broker_url"],
        "FLOOR_BROKER_PASSWORD": values["fixture_mq_password"],
        "FLOOR_DATABASE_PASSWORD": values["fixture_db_password"],
    }
    # pip inside the hosts uses the controller's index and certificates, as the django role does.
    if os.environ.get("PIP_INDEX_URL"):
        env["PIP_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
    if os.environ.get("PIP_CERT"):
        env["PIP_CERT"] = "/opt/bench-pip-ca.crt"
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "project.tar"
        with tarfile.open(project, "w") as tar:
            tar.add(ROOT / "files" / "demo-project", arcname=".",
                    filter=lambda info: None if "__pycache__" in info.name else info)
        seconds = {}
        for tier, argument, hosts in TIERS:
            started = time.monotonic()
            threads, failures = [], []
            for host in hosts:
                def one(host=host):
                    try:
                        docker("cp", str(HERE / "floor.sh"), f"{host}:/opt/bench-floor.sh", log_name=f"r{run_index}-floor-cp-{host}")
                        if argument in ("web", "worker", "beat"):
                            docker("cp", str(project), f"{host}:/opt/bench-project.tar", log_name=f"r{run_index}-floor-cp-{host}")
                            if os.environ.get("PIP_CERT"):
                                docker("cp", os.environ["PIP_CERT"], f"{host}:/opt/bench-pip-ca.crt",
                                       log_name=f"r{run_index}-floor-cp-{host}")
                        flags = [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
                        docker("exec", *flags, host, "bash", "/opt/bench-floor.sh", argument, log_name=f"r{run_index}-floor-{host}")
                    except SystemExit as error:
                        failures.append(str(error))
                threads.append(threading.Thread(target=one))
                threads[-1].start()
            for thread in threads:
                thread.join()
            if failures:
                raise SystemExit(failures[0])
            seconds[tier] = time.monotonic() - started
    return seconds


# --- throughput: Celery through the app's configuration against raw AMQP --

def app_python(host, *args, background=False, log_name="probe"):
    """probe.py on a deployed host, with the app's venv, environment and user."""
    command = (f"set -a; . /etc/{APP}/env; set +a; cd /srv/{APP}/current; "
               f"PYTHONPATH=/srv/{APP}/current exec runuser -u {APP} -- venv/bin/python /opt/bench-probe.py "
               + " ".join(shlex.quote(str(a)) for a in args))
    argv = ["docker", "exec", host, "sh", "-c", command]
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return json.loads(run(argv, log_name)[1].strip().splitlines()[-1])


def finish(process, what):
    out, err = process.communicate(timeout=900)
    if process.returncode != 0:
        raise SystemExit(f"{what} failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def throughput(run_index):
    for host in ("bench-web", "bench-worker1"):
        docker("cp", str(HERE / "probe.py"), f"{host}:/opt/bench-probe.py", log_name=f"r{run_index}-probe-cp")
        docker("exec", host, "chmod", "0644", "/opt/bench-probe.py", log_name=f"r{run_index}-probe-cp")
    n = THROUGHPUT_MESSAGES
    worker = "celery-worker@default.service"
    # Celery: publish with the workers stopped, then time the drain once they start.
    docker("exec", "bench-worker1", "systemctl", "stop", worker, log_name=f"r{run_index}-stop-worker")
    celery_publish = app_python("bench-web", "celery-publish", n, log_name=f"r{run_index}-celery-publish")
    watcher = app_python("bench-web", "watch-drain", "celery", n + 1, background=True)
    docker("exec", "bench-worker1", "systemctl", "start", worker, log_name=f"r{run_index}-start-worker")
    celery_drain = finish(watcher, "watching the celery queue drain")
    # Raw AMQP: the same, with a plain publisher and consumer.
    raw_publish = app_python("bench-web", "raw-publish", n, "bench.raw", log_name=f"r{run_index}-raw-publish")
    watcher = app_python("bench-web", "watch-drain", "bench.raw", n, background=True)
    consumer = app_python("bench-worker1", "raw-consume", "bench.raw", PREFETCH, background=True)
    raw_drain = finish(watcher, "watching the raw queue drain")
    finish(consumer, "the raw consumer")
    # The fair baseline: a plain consumer that does what a worker must for a no-op task (decode, log, late ack).
    app_python("bench-web", "raw-publish", n, "bench.fair", log_name=f"r{run_index}-fair-publish")
    watcher = app_python("bench-web", "watch-drain", "bench.fair", n, background=True)
    consumer = app_python("bench-worker1", "fair-consume", "bench.fair", PREFETCH, background=True)
    fair_drain = finish(watcher, "watching the fair queue drain")
    finish(consumer, "the fair consumer")
    celery_events_drain, events = events_drain(run_index, n)
    rate = lambda m: m["messages"] / m["seconds"]  # noqa: E731
    drain = lambda m: m["messages"] / (m["empty"] - m["first"])  # noqa: E731
    return {
        "publish_celery": rate(celery_publish), "publish_raw": rate(raw_publish),
        "drain_celery": drain(celery_drain), "drain_raw": drain(raw_drain), "drain_fair": drain(fair_drain),
        "drain_celery_events": drain(celery_events_drain), "events_per_task": events / n,
    }


def events_drain(run_index, n):
    """The deployed worker's drain with task events on (what Flower needs) and a reader of them bound, as
    Flower's is: the worker stops consuming, N tasks are queued, events are switched on, consuming resumes."""
    control = lambda *args: app_python("bench-web", "celery-control", *args,  # noqa: E731
                                       log_name=f"r{run_index}-control-{args[0]}")
    control("cancel_consumer", "celery")
    app_python("bench-web", "celery-publish", n, log_name=f"r{run_index}-celery-publish-events")
    control("enable_events")
    reader = app_python("bench-web", "events-consume", 60, background=True)
    time.sleep(1)  # the reader's queue bound before the first task runs
    watcher = app_python("bench-web", "watch-drain", "celery", n + 1, background=True)
    control("add_consumer", "celery")
    try:
        drained = finish(watcher, "watching the celery queue drain with task events")
    finally:
        control("disable_events")
    return drained, finish(reader, "the events reader")["events"]


# --- memory: DEBUG and max-tasks-per-child --------------------------------

def memory(run_index):
    results = {}
    for debug, mtpc in MEMORY_CASES:
        key = f"debug_{debug}_mtpc_{mtpc or 'none'}"
        results[key] = app_python("bench-worker1", "memory", debug, mtpc, MEMORY_WARMUP, MEMORY_TASKS,
                                  MEMORY_BATCH, MEMORY_QUERIES, log_name=f"r{run_index}-memory-{key}")
    return results
