"""Faults with nothing lost. Tasks are re-entrant, so the contract is at-least-once: every part of
every accepted job must end up done, whatever happens to the broker, a worker node or the disk."""

import json
import subprocess
import threading
import time

import pika.exceptions
import pytest
from bundletest import amqp as amqp_probe
from bundletest.common import APP, django, http, http_json, on, playbook, started_at, wait_for
from stack import MQ_PASSWORD, SECRETS, WORKERS, firing, queue_depths, start_job, wait_finished

DATA_DIR = "/var/lib/rabbitmq/mnesia"
DB_UNIT = "postgresql@17-main"


def wait_done(host, job, parts, timeout=600):
    state = wait_finished(host, [job], timeout=timeout)[job]
    assert (state["done"], state["failed"]) == (parts, 0), state
    return state


def send_tasks(host, task, args, count, timeout=300):
    code = (
        "import json; from celery import group; from analysis import tasks; "
        f"print(json.dumps(group(tasks.{task}.s(*{list(args)!r}) for _ in range({count})).apply_async().get(timeout={timeout})))"
    )
    out = on(host, "stack-worker1").check_output(f"{APP}-manage shell --no-startup --command {json.dumps(code)}")
    return json.loads(out.strip().splitlines()[-1])


def retries_logged(host):
    """Task retries the workers logged after a database error (a transient error, then a retry with backoff).
    A retry for an item another worker holds (a redelivered duplicate of an earlier test) is not one."""
    return sum(int(on(host, name).check_output(
        "grep -cE 'Retry in [0-9.]+s: (OperationalError|InterfaceError)' /var/log/celery/default.log || true"))
        for name in WORKERS)


def test_a_broker_restart_in_a_burst_loses_no_task_and_workers_reconnect_alone(host):
    parts = 2000
    workers_started = {name: started_at(on(host, name), "celery-worker@default") for name in WORKERS}
    job = start_job(host, parts)
    time.sleep(3)
    on(host, "stack-broker").check_output("systemctl restart rabbitmq-server")
    state = wait_done(host, job, parts)
    print(f"broker restart: {parts}/{parts} done, by {state['processed_by']}")
    assert set(state["processed_by"]) == set(WORKERS)
    assert {name: started_at(on(host, name), "celery-worker@default") for name in WORKERS} == workers_started


def test_the_tasks_of_a_dead_worker_node_complete_on_the_other(host):
    parts = 400
    job = start_job(host, parts)
    time.sleep(2)
    subprocess.run(["docker", "kill", "stack-worker2"], check=True, capture_output=True)
    try:
        state = wait_done(host, job, parts)
        assert state["processed_by"].get("stack-worker1", 0) > 0
    finally:
        subprocess.run(["docker", "start", "stack-worker2"], check=True, capture_output=True)
        worker2 = on(host, "stack-worker2")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and worker2.run("systemctl is-active celery-worker@default").rc != 0:
            time.sleep(2)
        assert worker2.service("celery-worker@default").is_running


def test_a_backlog_past_the_disk_alarm_blocks_publishers_and_loses_nothing(host):
    broker = on(host, "stack-broker")
    amqp = (broker.interface("eth0").addresses[0], APP, MQ_PASSWORD, APP)
    for name in WORKERS:
        on(host, name).check_output("systemctl stop celery-worker@default")
    try:
        # A task nobody wants once it is late (beat's heartbeats are sent so): it must expire and be dropped,
        # not kept with the dead letters.
        django(on(host, WORKERS[0]), "import json; from workbench.celery import app; print(json.dumps(app.send_task('analysis.tasks.heartbeat', expires=2).id))")
        backlog = start_job(host, 300)
        # Leave 40 MB above the 100 MB disk-free limit, so that queued messages,
        # not the test, cross it. RabbitMQ checks the free space more often the
        # closer it is to the limit: give it one check to see the new headroom,
        # as it would on a disk that filled slowly, then publish 1 MB messages
        # at 50 MB/s until the broker blocks the publisher.
        free = int(broker.check_output(f"df --output=avail -B1 {DATA_DIR} | tail -1"))
        limit = 100_000_000
        broker.check_output(f"fallocate -l {free - limit - 40_000_000} {DATA_DIR}/filler")
        time.sleep(3)
        try:
            try:
                confirmed, blocked = amqp_probe.publish_until_blocked(*amqp, "backlog", 1_000_000, limit=400, pause=0.02)
            except pika.exceptions.NackError:
                pytest.fail("the broker refused a message: the volume filled up before the disk alarm blocked the publisher")
            assert blocked, f"{confirmed} messages of 1 MB were taken and the publisher was never blocked"
            assert "disk" in broker.check_output("rabbitmq-diagnostics --quiet alarms"), "the disk alarm was not raised"
            # Someone is told: the monitoring host's alert fires while the alarm holds.
            assert wait_for(lambda: firing(host, "BrokerDiskAlarm"), timeout=60), "the disk alarm's alert did not fire"
            started = time.monotonic()
            status, body = http_json(host, "/jobs/?parts=5", method="POST", timeout=60)
            seconds = time.monotonic() - started
            assert status == 503 and "error" in body, body
            assert seconds < 30, f"the web app waited {seconds:.0f} s on a blocked broker"
            assert http_json(host, "/health/")[0] == 200
        finally:
            broker.check_output(f"rm -f {DATA_DIR}/filler")
        deadline = time.monotonic() + 60
        while "disk" in broker.check_output("rabbitmq-diagnostics --quiet alarms") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "disk" not in broker.check_output("rabbitmq-diagnostics --quiet alarms"), "the disk alarm did not clear"
        assert wait_for(lambda: not firing(host, "BrokerDiskAlarm"), timeout=60), "the disk alarm's alert did not clear"
        # Every message the broker confirmed is still there (one more may have
        # been stored while its confirm was held back by the block).
        kept = len(amqp_probe.read_all(*amqp, "backlog", requeue=False))
        assert confirmed <= kept <= confirmed + 1, (confirmed, kept)
        print(f"backlog: {confirmed} messages of 1 MB confirmed before the block, {kept} kept; web answered 503 in {seconds:.1f} s")
        queued = broker.check_output("rabbitmqctl --quiet list_queues -p workbench name messages --formatter json")
        assert {q["name"]: q["messages"] for q in json.loads(queued)}.get("celery", 0) >= 300
    finally:
        for name in WORKERS:
            on(host, name).check_output("systemctl start celery-worker@default")
    wait_done(host, backlog, 300)
    after = start_job(host, 20)
    wait_done(host, after, 20)
    assert queue_depths(host).get("celery.dead-letter", 0) == 0, "a task that expired while no worker consumed was kept"


def test_a_leaking_task_is_contained_by_max_memory_per_child(host):
    # 100 tasks x 20 MB over 4 children: about 500 MB each if nothing recycled
    # them; the pool's limit is 256 MB.
    rss_kb = send_tasks(host, "leak_memory", [20_000], 100)
    limit_kb = 262_144
    assert max(rss_kb) < limit_kb + 2 * 20_000, max(rss_kb)
    for name in WORKERS:
        assert on(host, name).service("celery-worker@default").is_running


def watch_job(host, job, stop):
    """Every answer GET /jobs/<id>/ gave while stop is unset: (status, Retry-After)."""
    answers = []

    def poll():
        while not stop.is_set():
            try:
                status, headers, _body = http(host, f"/jobs/{job}/")
                answers.append((status, headers.get("retry-after")))
            except OSError as error:
                answers.append((repr(error), None))
            time.sleep(0.2)

    thread = threading.Thread(target=poll)
    thread.start()
    return thread, answers


def test_a_database_restart_in_a_burst_loses_no_task_and_the_web_answers_503(host):
    parts = 2000
    job = start_job(host, parts)
    stop = threading.Event()
    watcher, answers = watch_job(host, job, stop)
    try:
        time.sleep(5)
        on(host, "stack-db").check_output(f"systemctl restart {DB_UNIT}")
        wait_done(host, job, parts)
    finally:
        stop.set()
        watcher.join()
    statuses = {status for status, _ in answers}
    assert statuses <= {200, 503}, [a for a in answers if a[0] not in (200, 503)][:5]
    assert all(retry_after for status, retry_after in answers if status == 503), "a 503 without Retry-After"
    print(f"database restart: {parts}/{parts} done; web answers {sorted((s, sum(1 for a in answers if a[0] == s)) for s in statuses)}")


def test_a_setting_that_needs_a_restart_pauses_the_workers_and_no_task_fails(host):
    """Jobs keep coming through the web during the whole run, so tasks are running when the workers pause and
    queued while the database restarts (the web itself may answer 503 in the restart's second)."""
    retries_before = retries_logged(host)
    jobs, done = [], threading.Event()

    def load():
        while not done.is_set():
            try:
                status, body = http_json(host, "/jobs/?parts=10", method="POST")
                if status == 202:
                    jobs.append(body["job"])
            except OSError:
                pass
            time.sleep(0.5)

    client = threading.Thread(target=load)
    client.start()
    try:
        try:
            run = playbook("playbooks/database.yml", "-e", "postgresql_max_connections=120", secrets=SECRETS)
        finally:
            done.set()
            client.join()
        assert "Stop consuming and wait for the running tasks" in run.stdout
        assert "celery_worker : Consume again" in run.stdout
        assert on(host, "stack-db").check_output("runuser -u postgres -- psql -Atc 'show max_connections'") == "120"
        states = wait_finished(host, jobs)
        assert sum(state["done"] for state in states.values()) == 10 * len(jobs), \
            [s for s in states.values() if s["done"] != 10][:3]
        assert sum(state["failed"] for state in states.values()) == 0
        assert retries_logged(host) == retries_before, "a task met the database restart and had to retry"
        print(f"planned database restart: {len(jobs)} jobs ({10 * len(jobs)} parts) accepted during the run, all done,"
              f" {retries_logged(host) - retries_before} retries")
    finally:
        # Back to the inventory's setting, the same way, even after a failure: the later tests read it.
        playbook("playbooks/database.yml", secrets=SECRETS)
    assert on(host, "stack-db").check_output("runuser -u postgres -- psql -Atc 'show max_connections'") == "100"
