"""Wrong inventory input is refused with a message naming the variable, before any host changes, and no
secret shows in the output. Each case is the tier playbook ops would run, with one wrong value."""

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from bundletest.common import INVENTORY, PLAIN, PROJECT, on, recap
from stack import MQ_PASSWORD, SECRETS

POOL = {"name": "default", "queues": ["celery"]}
# A release the hosts do not run yet: with it, a check that ran only after the django role would come
# after a change (a new release built and switched).
NEW_RELEASE = "new-release"

CASES = {
    "secret key missing": ("web.yml", {"django_secret_key": ""}, "django_secret_key must come from the vault"),
    "DEBUG on in production": ("web.yml", {"django_debug": True}, "django_debug is true in the production environment"),
    "DEBUG on through the extra environment": (
        "web.yml", {"django_extra_environment": {"DJANGO_DEBUG": "true"}}, "django_extra_environment sets DJANGO_DEBUG"),
    "two settings under one environment name": (
        "web.yml", {"django_environment_names": {"debug": "DATABASE_URL"}}, "django_environment_names maps"),
    "ALLOWED_HOSTS empty in production": ("web.yml", {"django_allowed_hosts": []}, "django_allowed_hosts is empty"),
    "malformed database URL": ("web.yml", {"django_database_url": "stack-db:5432"}, "django_database_url must be a URL"),
    "bad broker host": (
        "workers.yml", {"django_broker_url": "amqp://workbench:x@no-such-broker:5672/workbench"},
        "no-such-broker (from django_broker_url) does not resolve"),
    "manage.py not where the project says": (
        "web.yml", {"django_project_subdir": "src"}, "manage.py must be in src"),
    "one release kept": ("web.yml", {"django_keep_releases": 1}, "django_keep_releases must be at least 2"),
    "Gunicorn as root": ("web.yml", {"gunicorn_user": "root"}, "gunicorn_user must not be root"),
    "static URL without a slash": ("web.yml", {"nginx_static_url": "/static"}, "nginx_static_url"),
    "zero max-tasks-per-child": (
        "workers.yml", {"celery_worker_pools": [{**POOL, "max_tasks_per_child": 0}]}, "max_tasks_per_child"),
    "negative concurrency": ("workers.yml", {"celery_worker_pools": [{**POOL, "concurrency": -2}]}, "concurrency"),
    "unknown key in a worker pool": ("workers.yml", {"celery_worker_pools": [{**POOL, "maxtasks": 5}]}, "maxtasks"),
    "unknown queue": ("workers.yml", {"celery_worker_pools": [{**POOL, "queues": ["reports"]}]}, "reports"),
    "soft time limit above the hard one": (
        "workers.yml", {"celery_worker_pools": [{**POOL, "soft_time_limit": 400, "time_limit": 300}]}, "soft_time_limit"),
    "task longer than the broker's consumer timeout": (
        "workers.yml", {"celery_worker_pools": [{**POOL, "soft_time_limit": 1900, "time_limit": 2000}]}, "consumer"),
    "countdowns longer than the broker's consumer timeout": (
        "workers.yml", {"celery_worker_longest_countdown_seconds": 3600}, "celery_worker_longest_countdown_seconds"),
    "beat's state directory outside /var/lib": (
        "beat.yml", {"celery_beat_state_dir": "/srv/beat"}, "celery_beat_state_dir must be under /var/lib"),
    "beat's log level unknown": ("beat.yml", {"celery_beat_log_level": "LOUD"}, "celery_beat_log_level must be one of"),
    "worker log directory with a space": (
        "workers.yml", {"celery_worker_log_dir": "/var/log/celery worker"}, "celery_worker_log_dir must be an absolute path"),
    "beat's extra writable path relative": (
        "beat.yml", {"celery_beat_read_write_paths": ["var/tmp"]}, "celery_beat_read_write_paths must list absolute paths"),
    "worker user name with a capital": ("workers.yml", {"celery_worker_user": "Workbench"}, "celery_worker_user must be a system user"),
    "malformed disk limit": ("broker.yml", {"rabbitmq_disk_free_limit_absolute": "12XB"}, "rabbitmq_disk_free_limit_absolute"),
    "memory watermark above 1": ("broker.yml", {"rabbitmq_vm_memory_high_watermark": 1.5}, "rabbitmq_vm_memory_high_watermark"),
    "consumer timeout of 0": ("broker.yml", {"rabbitmq_consumer_timeout_seconds": 0}, "rabbitmq_consumer_timeout_seconds must be at least 1"),
    "message size above RabbitMQ's ceiling": (
        "broker.yml", {"rabbitmq_max_message_size": 1073741824}, "rabbitmq_max_message_size must be from 1 to 536870912"),
    "short Erlang cookie": ("broker.yml", {"rabbitmq_erlang_cookie": "short"}, "rabbitmq_erlang_cookie must be at least 32"),
    "permission on an unknown vhost": (
        "broker.yml",
        {"rabbitmq_users": [{"name": "workbench", "password": MQ_PASSWORD, "permissions": [{"vhost": "nope"}]}]},
        "rabbitmq_vhosts"),
    "data device with a foreign file system": (
        "broker.yml", {"rabbitmq_data_fstype": "xfs"}, "rabbitmq_data_device"),
    "a node name that does not own the store": (
        "broker.yml", {"rabbitmq_nodename": "rabbit@elsewhere"}, "belongs to rabbit@localhost, but the node would be rabbit@elsewhere"),
    "Erlang distribution on an address that is not one": (
        "broker.yml", {"rabbitmq_distribution_address": "localhost"}, "rabbitmq_distribution_address must be"),
    "PostgreSQL exporter on a port above 65535": (
        "monitoring.yml", {"postgres_exporter_port": 70000}, "postgres_exporter_port and postgres_exporter_database_port"),
    "database connections ratio as a percentage": (
        "monitoring.yml", {"monitoring_database_connections_max_ratio": 80}, "monitoring_database_connections_max_ratio a share of PostgreSQL"),
    "scrape interval too long for the counters' rules": (
        "monitoring.yml", {"monitoring_scrape_interval": "2m"}, "monitoring_scrape_interval at most 1m"),
    "beat's silence window as a word": (
        "monitoring.yml", {"monitoring_beat_max_silence": "an hour"}, "monitoring_beat_max_silence one duration"),
    "a relative log for mtail": ("monitoring.yml", {"mtail_logs": ["nginx/app.access.log"]}, "mtail_logs must list absolute paths"),
    "web error ratio as a percentage": (
        "monitoring.yml", {"monitoring_web_5xx_max_ratio": 5}, "monitoring_web_5xx_max_ratio a share of the web"),
    "database owned by an unknown user": (
        "database.yml", {"postgresql_databases": [{"name": "other", "owner": "nobody"}]}, "nobody"),
}
# Each tier playbook checks every host of its run the same way: one host of a kind is enough to see the refusal
# (the second worker stands for both; the monitoring cases need the exporters' hosts and the monitoring host).
LIMITS = {"workers.yml": "stack-worker2", "monitoring.yml": "stack-db,stack-web,stack-monitor"}
# Checked before the first change of site.yml: a wrong value of a later tier stops the run before the broker.
SITE_CASES = {"nginx value in a whole-site run": ({"nginx_listen_port": 0}, "nginx_listen_port must be between 1 and 65535")}


@pytest.fixture(scope="module")
def new_release(tmp_path_factory):
    source = tmp_path_factory.mktemp("bad-input") / NEW_RELEASE
    shutil.copytree(PROJECT / "files/demo-project", source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "analysis/static/analysis/version.txt").write_text("never deployed\n")
    return source


def refused(playbook, extra_vars, *args):
    run = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, *args, f"playbooks/{playbook}", "-e", json.dumps(extra_vars)],
        cwd=PROJECT, capture_output=True, text=True, timeout=600, env=PLAIN,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    counts = recap(run)
    assert counts and all(c["changed"] == 0 for c in counts.values()), counts
    for secret in SECRETS:
        assert secret not in output, f"a secret ({secret[:8]}...) shows in the output"
    return output


@pytest.fixture(scope="module")
def outcomes(new_release):
    """Every case's output, run four at a time: each is a read-only run that stops at its checks."""
    def run(case):
        playbook, extra_vars, _message = CASES[case]
        limit = ["--limit", LIMITS[playbook]] if playbook in LIMITS else []
        try:
            return case, refused(playbook, {"django_source_path": str(new_release), **extra_vars}, *limit)
        except AssertionError as failure:
            return case, failure

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_before_any_change(case, outcomes):
    outcome = outcomes[case]
    if isinstance(outcome, AssertionError):
        raise outcome
    assert CASES[case][2] in outcome


@pytest.mark.parametrize("case", SITE_CASES)
def test_a_whole_site_run_checks_every_tier_before_the_first_change(case, new_release):
    extra_vars, message = SITE_CASES[case]
    assert message in refused("site.yml", {"django_source_path": str(new_release), **extra_vars})


def test_two_broker_hosts_are_refused_until_they_form_a_cluster(tmp_path):
    second = tmp_path / "second-broker.yml"
    second.write_text("all:\n  children:\n    broker:\n      hosts:\n        stack-db:\n")
    assert "does not form a cluster" in refused("broker.yml", {}, "-i", str(second))


def test_a_data_device_mounted_elsewhere_is_refused(host):
    broker = on(host, "stack-broker")
    broker.check_output("mkdir -p /mnt/elsewhere && mount /dev/vdb /mnt/elsewhere")
    try:
        assert "mounted" in refused("broker.yml", {})
    finally:
        broker.check_output("umount /mnt/elsewhere")
