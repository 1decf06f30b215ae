"""Behaviour of a converged broker: volume, alarms, AMQP access, logs, refusal to run without its volume."""

import json
import sys
import time
import uuid
from pathlib import Path

import pika.exceptions
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
import amqp_probe  # noqa: E402
import units  # noqa: E402

DATA_DIR = "/var/lib/rabbitmq/mnesia"
DEVICE = "/dev/vdb"


@pytest.fixture(scope="module")
def cfg(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def address(host):
    return host.interface("eth0").addresses[0]


@pytest.fixture(scope="module")
def app(cfg, address):
    """(host, user, password, vhost) of the application user."""
    user = next(u for u in cfg["rabbitmq_users"] if u["name"] == "app")
    return address, user["name"], user["password"], user["permissions"][0]["vhost"]


def status(host):
    return json.loads(host.check_output("rabbitmq-diagnostics --quiet status --formatter json"))


def has_disk_alarm(host):
    return "disk" in host.check_output("rabbitmq-diagnostics --quiet alarms")


def wait_for(predicate, timeout=30, interval=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_broker_runs_and_starts_at_boot(host):
    broker = host.service("rabbitmq-server")
    assert broker.is_running
    assert broker.is_enabled


def test_data_directory_is_the_volume(host):
    source, fstype = host.check_output(f"findmnt --noheadings --output SOURCE,FSTYPE --mountpoint {DATA_DIR}").split()
    assert (source, fstype) == (DEVICE, "ext4")
    assert DEVICE in host.file("/etc/fstab").content_string
    assert host.file(DATA_DIR).user == "rabbitmq"


def test_message_store_files_are_on_the_volume(host, app):
    amqp_probe.publish(*app, "store-check", ["persistent"])
    data_directory = status(host)["data_directory"]
    assert data_directory.startswith(DATA_DIR + "/")
    stores = host.check_output(f"find {data_directory}/msg_stores -type f -name '*.rdq'").split()
    assert stores, "no message store segment files were written"
    for store in stores:
        assert host.check_output(f"findmnt --noheadings --output SOURCE --target {store}") == DEVICE


def test_nothing_was_written_to_the_root_disk_under_the_mount_point(host):
    """The broker never started before its volume was mounted (fresh path), or its data moved (migration path)."""
    view = "/run/root-disk-view"
    host.check_output(f"mkdir -p {view} && mount --bind / {view}")
    try:
        hidden = host.check_output(f"ls -A {view}{DATA_DIR}")
    finally:
        host.check_output(f"umount {view}")
    assert hidden == ""


def test_broker_reports_the_configured_alarm_limits(host):
    reported = status(host)
    assert reported["disk_free_limit"] == 50_000_000
    assert reported["vm_memory_high_watermark_setting"] == {"relative": 0.4}


def test_open_file_limit_comes_from_the_drop_in(host, cfg):
    expected = str(cfg["rabbitmq_nofile_limit"])
    pid = host.check_output("systemctl show --property MainPID --value rabbitmq-server")
    limits = host.file(f"/proc/{pid}/limits").content_string
    assert any(line.startswith("Max open files") and line.split()[3:5] == [expected, expected] for line in limits.splitlines())


def test_listeners_bind_only_where_configured(host):
    assert host.socket("tcp://0.0.0.0:5672").is_listening
    assert host.socket("tcp://127.0.0.1:15672").is_listening
    assert host.socket("tcp://127.0.0.1:15692").is_listening
    assert not host.socket("tcp://0.0.0.0:15672").is_listening
    assert not host.socket("tcp://0.0.0.0:15692").is_listening


def test_broker_unit_is_confined(host):
    assert host.check_output("systemctl show --property User --value rabbitmq-server") == "rabbitmq"
    assert units.exposure(host, "rabbitmq-server.service") < 5.0
    assert not units.writable(host, "rabbitmq-server.service", "/etc")
    assert units.writable(host, "rabbitmq-server.service", DATA_DIR)
    assert int(units.capability_bounding_set(host, "rabbitmq-server.service"), 16) == 0


def test_app_user_publishes_and_consumes_on_its_vhost(app):
    queue = f"roundtrip-{uuid.uuid4().hex[:8]}"
    amqp_probe.publish(*app, queue, ["one", "two"])
    assert amqp_probe.read_all(*app, queue, requeue=False) == ["one", "two"]
    assert amqp_probe.read_all(*app, queue) == []


def test_app_user_is_confined_to_its_vhost(app):
    address, user, password, _vhost = app
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        amqp_probe.connect(address, user, password, "/")


def test_guest_is_gone(host, address):
    assert "guest" not in host.check_output("rabbitmqctl --quiet list_users --formatter json")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp_probe.connect(address, "guest", "guest", "/")


def test_disk_alarm_blocks_publishers_and_clears_without_losing_messages(host, app):
    queue = f"alarm-{uuid.uuid4().hex[:8]}"
    amqp_probe.publish(*app, queue, ["queued-before-alarm"])
    # Ask for more free space than the 256 MB volume has: the alarm must trip.
    host.check_output("rabbitmqctl set_disk_free_limit 1000000000")
    try:
        assert wait_for(lambda: has_disk_alarm(host)), "the disk alarm was not raised"
        notified, confirmed, seconds = amqp_probe.try_publish_while_blocked(*app, queue, timeout=5)
        assert notified, "the broker did not tell the publisher it is blocked"
        assert not confirmed, "a publish was confirmed while the disk alarm was on"
        assert seconds < 30
    finally:
        host.check_output("rabbitmqctl set_disk_free_limit 50MB")
    assert wait_for(lambda: not has_disk_alarm(host)), "the disk alarm did not clear"
    amqp_probe.publish(*app, queue, ["published-after-alarm"])
    # The blocked publish was never confirmed, so the publisher must treat it as
    # not sent; the broker may still take it from the socket once unblocked.
    bodies = amqp_probe.read_all(*app, queue)
    assert bodies in (
        ["queued-before-alarm", "published-after-alarm"],
        ["queued-before-alarm", "published-during-alarm", "published-after-alarm"],
    )


def test_log_rotation_is_valid_and_the_broker_keeps_logging(host, app):
    rules = "/etc/logrotate.d/rabbitmq-server"
    check = host.run(f"logrotate --debug {rules}")
    # The log names contain "error"; logrotate's own complaints start with it.
    complaints = [line for line in check.stderr.splitlines() if line.lower().startswith("error")]
    assert check.rc == 0 and not complaints, check.stderr
    log = host.check_output("ls /var/log/rabbitmq/rabbit@*.log | grep -v _upgrade")
    host.check_output(f"logrotate --force {rules}")
    assert host.file(f"{log}.1").exists
    marker = f"after-rotation-{uuid.uuid4().hex[:8]}"
    amqp_probe.connect(*app, name=marker).close()
    assert wait_for(lambda: marker in host.file(log).content_string), "nothing was logged after the rotation"
    timers = host.check_output("systemctl show --property TimersCalendar --value logrotate.timer")
    assert "*-*-* *:00:00" in timers, "logrotate does not run hourly"


def test_broker_refuses_to_start_without_its_volume(host, app):
    queue = f"unmounted-{uuid.uuid4().hex[:8]}"
    amqp_probe.publish(*app, queue, ["kept-on-the-volume"])
    host.check_output("systemctl stop rabbitmq-server")
    host.check_output(f"umount {DATA_DIR}")
    try:
        assert host.run("systemctl start rabbitmq-server").rc != 0
        assert not host.service("rabbitmq-server").is_running
        assert host.check_output(f"ls -A {DATA_DIR}") == "", "the broker wrote a new store on the root disk"
        # By identifier alone: journald may not tie a line from a short-lived
        # ExecStartPre process to its unit.
        assert wait_for(lambda: f"is not mounted at {DATA_DIR}" in host.check_output(
            "journalctl --identifier rabbitmq-server --no-pager --since -2min"), timeout=10), "the refusal was not logged"
    finally:
        host.check_output(f"mount {DATA_DIR} && systemctl reset-failed rabbitmq-server && systemctl start rabbitmq-server")
    assert amqp_probe.read_all(*app, queue) == ["kept-on-the-volume"]


def test_migrated_node_kept_its_messages(host, app):
    if "started_on_root_disk" not in host.ansible.get_variables()["group_names"]:
        pytest.skip("this node got its volume before its first start")
    assert amqp_probe.read_all(*app, "migration-canary") == ["written-on-the-root-disk"]
    assert host.check_output(f"ls -d {DATA_DIR}.root-disk-*")
