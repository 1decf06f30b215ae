"""Wrong inventory input is refused with a message naming the variable, before any host changes,
and no secret shows in the output."""

import json
import os
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
SECRETS = ["stack-db-password", "stack-mq-password", "stack-ops-password", "stack-secret-key-0123456789"]
POOL = {"name": "default", "queues": ["celery"]}

CASES = {
    "secret key missing": ("web.yml", {"django_secret_key": ""}, "django_secret_key must come from the vault"),
    "DEBUG on in production": ("web.yml", {"django_debug": True}, "django_debug is true in the production environment"),
    "DEBUG on through the extra environment": (
        "web.yml", {"django_extra_environment": {"DJANGO_DEBUG": "true"}}, "django_extra_environment sets DJANGO_DEBUG"),
    "ALLOWED_HOSTS empty in production": ("web.yml", {"django_allowed_hosts": []}, "django_allowed_hosts is empty"),
    "malformed database URL": ("web.yml", {"django_database_url": "stack-db:5432"}, "django_database_url must be a URL"),
    "bad broker host": (
        "workers.yml", {"django_broker_url": "amqp://workbench:x@no-such-broker:5672/workbench"},
        "no-such-broker (from django_broker_url) does not resolve"),
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
    "malformed disk limit": ("broker.yml", {"rabbitmq_disk_free_limit_absolute": "12XB"}, "rabbitmq_disk_free_limit_absolute"),
    "memory watermark above 1": ("broker.yml", {"rabbitmq_vm_memory_high_watermark": 1.5}, "rabbitmq_vm_memory_high_watermark"),
    "short Erlang cookie": ("broker.yml", {"rabbitmq_erlang_cookie": "short"}, "rabbitmq_erlang_cookie must be at least 32"),
    "permission on an unknown vhost": (
        "broker.yml",
        {"rabbitmq_users": [{"name": "workbench", "password": "stack-mq-password", "permissions": [{"vhost": "nope"}]}]},
        "rabbitmq_vhosts"),
    "data device with a foreign file system": (
        "broker.yml", {"rabbitmq_data_fstype": "xfs"}, "rabbitmq_data_device"),
    "database owned by an unknown user": (
        "database.yml", {"postgresql_databases": [{"name": "other", "owner": "nobody"}]}, "nobody"),
}


@pytest.fixture(autouse=True)
def once(host):
    if host.backend.host != "stack-web":
        pytest.skip("system tests run once")


def refused(playbook, extra_vars):
    run = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, f"playbooks/{playbook}", "-e", json.dumps(extra_vars)],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    recap = [line for line in run.stdout.splitlines() if " changed=" in line]
    assert recap and all(" changed=0 " in line for line in recap), "\n".join(recap)
    for secret in SECRETS:
        assert secret not in output, f"a secret ({secret[:8]}...) shows in the output"
    return output


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_before_any_change(case):
    playbook, extra_vars, message = CASES[case]
    assert message in refused(playbook, extra_vars)


def test_a_data_device_mounted_elsewhere_is_refused(host):
    broker = host.get_host("ansible://stack-broker", ansible_inventory=INVENTORY)
    broker.check_output("mkdir -p /mnt/elsewhere && mount /dev/vdb /mnt/elsewhere")
    try:
        assert "mounted" in refused("broker.yml", {})
    finally:
        broker.check_output("umount /mnt/elsewhere")
