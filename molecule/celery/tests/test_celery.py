"""Behaviour of the workers and beat: real tasks over AMQP, recycled children, warm stops, redelivery, one beat."""

import json
import shutil
import time
import uuid

import pytest
from bundletest import units
from bundletest.common import APP, PROJECT, django, on, playbook, wait_for


def send(host, task, args=(), queue="celery", count=1, timeout=90):
    """Publish `count` tasks through the app's Celery configuration and wait for every result."""
    return django(host, (
        "import json; from celery import group; from analysis import tasks; "
        f"job = group(tasks.{task}.s(*{list(args)!r}).set(queue={queue!r}) for _ in range({count})).apply_async(); "
        f"print(json.dumps(job.get(timeout={timeout})))"
    ), timeout=timeout + 30)


def sleep_run(host, token):
    return django(host, (
        "import json; from analysis.models import SleepRun; "
        f"r = SleepRun.objects.filter(token={token!r}).values('hostname', 'finished_at').first(); "
        "print(json.dumps(r and {'hostname': r['hostname'], 'finished': r['finished_at'] is not None}))"
    ))


def test_a_task_reaches_a_worker_of_the_right_pool(host):
    [default] = send(host, "whoami")
    assert default["queue"] == "celery" and default["debug"] is False
    [slow] = send(host, "whoami", queue="slow")
    assert slow["queue"] == "slow"
    pools = host.check_output("systemctl list-units --no-legend --plain 'celery-worker@*' | awk '{print $1}'").split()
    assert sorted(pools) == ["celery-worker@default.service", "celery-worker@slow.service"]


def test_children_are_replaced_after_max_tasks_per_child(host):
    results = send(host, "whoami", count=40)
    pids_by_host = {}
    for result in results:
        pids_by_host.setdefault(result["hostname"], set()).add(result["pid"])
    # 2 children per host, each replaced after 5 tasks: 40 tasks need at least 8 processes.
    assert sum(len(pids) for pids in pids_by_host.values()) >= 8, pids_by_host


def test_recycling_limits_are_on_the_running_command_line(host):
    pid = host.check_output("systemctl show --property MainPID --value celery-worker@default")
    args = host.file(f"/proc/{pid}/cmdline").content_string.replace("\0", " ")
    assert "--max-tasks-per-child=5" in args and "--max-memory-per-child=65536" in args
    assert f"default@{host.backend.host}" in args


def test_debug_is_off_so_workers_keep_no_queries(host):
    assert send(host, "query_db", args=(50,)) == [0]


def start_sleep(host, name, seconds):
    """A task that sleeps on the slow pool; (its token, the worker host that runs it) once it started."""
    token = f"{name}-{uuid.uuid4().hex[:8]}"
    django(host, f"from analysis import tasks; tasks.sleep_for.apply_async(({token!r}, {seconds}), queue='slow'); print(1)")
    runner = wait_for(lambda: (sleep_run(host, token) or {}).get("hostname"))
    assert runner, "the task never started"
    return token, on(host, runner)


def test_stopping_a_worker_lets_its_running_task_finish(host):
    token, worker = start_sleep(host, "warm-stop", 12)
    started = time.monotonic()
    worker.check_output("systemctl stop celery-worker@slow")
    try:
        assert time.monotonic() - started > 3, "the stop did not wait for the running task"
        assert sleep_run(host, token)["finished"], "the task was cut off by the stop"
    finally:
        worker.check_output("systemctl start celery-worker@slow")


def test_a_task_of_a_killed_worker_is_redelivered_and_completes(host):
    # Long enough that it still runs when the kill lands on a loaded machine (6 s was not, once).
    token, worker = start_sleep(host, "killed", 20)
    worker.check_output("systemctl kill --signal=SIGKILL celery-worker@slow")
    assert not sleep_run(host, token)["finished"]
    # systemd restarts the unit; the unacknowledged message goes to a live worker.
    assert wait_for(lambda: sleep_run(host, token)["finished"], timeout=120), "the killed task was lost"
    assert wait_for(lambda: worker.service("celery-worker@slow").is_running, timeout=60)


def test_worker_logs_rotate_and_workers_keep_logging(host):
    host.check_output("logrotate --force /etc/logrotate.d/celery-worker")
    assert host.file("/var/log/celery/default.log.1").exists
    marker = f"after-rotation-{uuid.uuid4().hex[:8]}"
    # Only this host's pool may take the task, so its log must show it.
    others = [on(host, name) for name in ("celery-worker12", "celery-worker13") if name != host.backend.host]
    for other in others:
        other.check_output("systemctl stop celery-worker@default")
    try:
        send(host, "sleep_for", args=(marker, 0), count=1)
    finally:
        for other in others:
            other.check_output("systemctl start celery-worker@default")
    assert wait_for(lambda: marker in host.check_output("cat /var/log/celery/default.log"), timeout=20)


def heartbeats(host):
    return django(host, "from analysis.models import Heartbeat; print(Heartbeat.objects.count())")


def test_beat_triggers_the_periodic_task_within_its_interval(host):
    before = heartbeats(host)
    assert wait_for(lambda: heartbeats(host) > before, timeout=20), "no heartbeat within 4 intervals"


def test_beat_runs_on_exactly_one_host(host):
    active = [
        name for name in ("celery-worker12", "celery-worker13")
        if on(host, name).run("systemctl is-active celery-beat").stdout.strip() == "active"
    ]
    assert active == [host.backend.host], active


def test_beat_logs_rotate_and_beat_keeps_logging(host):
    host.check_output("logrotate --force /etc/logrotate.d/celery-beat")
    assert host.file("/var/log/celery/beat.log.1").exists
    size = host.file("/var/log/celery/beat.log").size
    assert wait_for(lambda: host.file("/var/log/celery/beat.log").size > size, timeout=20)


def test_beat_on_two_hosts_is_refused_before_any_change(host, tmp_path):
    second_beat = tmp_path / "second-beat.yml"
    second_beat.write_text("all:\n  children:\n    beat:\n      hosts:\n        celery-worker13:\n")
    run = playbook("-i", str(second_beat), "playbooks/beat.yml", check=False)
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "celery_beat_hosts" in output and "exactly one" in output, output[-2000:]
    assert "changed=" not in run.stdout or "changed=0" in run.stdout
    assert on(host, "celery-worker13").run("systemctl is-active celery-beat").stdout.strip() != "active"


def test_worker_units_run_as_the_app_user_and_are_hardened(host):
    assert host.check_output("systemctl show --property User --value celery-worker@default") == APP
    assert units.exposure(host, "celery-worker@default.service") < 5.0


def test_beat_unit_runs_as_the_app_user_and_is_hardened(host):
    assert host.check_output("systemctl show --property User --value celery-beat") == APP
    assert units.exposure(host, "celery-beat.service") < 5.0


def test_broker_takes_a_relative_disk_limit_written_as_an_integer(host):
    status = json.loads(host.check_output("rabbitmq-diagnostics --quiet status --formatter json"))
    assert status["disk_free_limit"] == 2147483648
    assert "disk_free_limit.relative = 1.0" in host.file("/etc/rabbitmq/rabbitmq.conf").content_string


def test_a_project_that_ignores_the_pools_settings_is_refused(host, tmp_path):
    """A project whose settings do not take CELERY_* from the environment, and that acks early: the pool's
    late acks never reach Celery, and the run must say so instead of losing a killed worker's task quietly."""
    if host.backend.host != "celery-worker13":
        pytest.skip("one worker is enough")
    source = tmp_path / "ignores-environment"
    shutil.copytree(PROJECT / "files/demo-project", source, ignore=shutil.ignore_patterns("__pycache__"))
    settings = source / "workbench/settings.py"
    text = settings.read_text().replace("CELERY_TASK_ACKS_LATE = True", "CELERY_TASK_ACKS_LATE = False")
    settings.write_text(text.replace('if _name.startswith("CELERY_"):', 'if _name.startswith("CELERY_") and False:'))
    limit = ["--limit", host.backend.host]
    try:
        run = playbook("playbooks/workers.yml", *limit, "-e", f"django_source_path={source}", check=False)
        assert run.returncode != 0
        assert "the project's Celery app ignores task_acks_late (the pool asks for True, the app runs with False)" \
            in run.stdout, run.stdout[-3000:]
        assert "broker_heartbeat (the pool asks for 30, the app runs with 120" in run.stdout
    finally:
        playbook("playbooks/workers.yml", *limit)
    settings_now = json.loads(host.check_output("celery-worker-control settings default"))
    assert settings_now["task_acks_late"] is True and settings_now["broker_heartbeat"] == 30
