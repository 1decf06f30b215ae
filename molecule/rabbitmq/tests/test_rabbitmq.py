"""Behaviour of a converged broker: volume, alarms, AMQP access, logs, refusal to run without its volume."""

import json
import time
import uuid

import pika.exceptions
import pytest
from bundletest import amqp as amqp_probe
from bundletest import units
from bundletest.common import playbook, wait_for

DATA_DIR = "/var/lib/rabbitmq/mnesia"
DEVICE = "/dev/vdb"


def status(host):
    return json.loads(host.check_output("rabbitmq-diagnostics --quiet status --formatter json"))


def has_disk_alarm(host):
    return "disk" in host.check_output("rabbitmq-diagnostics --quiet alarms")


def test_broker_runs_and_starts_at_boot(host):
    broker = host.service("rabbitmq-server")
    assert broker.is_running
    assert broker.is_enabled


def test_data_directory_is_the_volume_mounted_by_uuid(host):
    source, fstype, uuid_ = host.check_output(
        f"findmnt --noheadings --output SOURCE,FSTYPE,UUID --mountpoint {DATA_DIR}").split()
    assert (source, fstype) == (DEVICE, "ext4")
    # By UUID: another disk that takes the device's name is never mounted in the store's place.
    assert f"UUID={uuid_} {DATA_DIR} ext4" in host.file("/etc/fstab").content_string
    assert host.file(DATA_DIR).user == "rabbitmq"


def test_the_node_name_and_the_volume_are_remembered(host):
    assert "NODENAME=rabbit@localhost" in host.file("/etc/rabbitmq/rabbitmq-env.conf").content_string
    remembered = json.loads(host.file("/etc/ansible/facts.d/rabbitmq.fact").content_string)
    assert remembered == {"nodename": "rabbit@localhost", "data_device_uuid": host.check_output(f"blkid -p -s UUID -o value {DEVICE}")}
    assert status(host)["data_directory"] == f"{DATA_DIR}/rabbit@localhost"


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


def rabbit_env(host, key):
    return host.check_output(f"rabbitmqctl --quiet eval 'application:get_env(rabbit, {key}).'")


def test_3_10_and_4_0_run_with_the_same_limits(host):
    """Defaults that differ between releases are set; sizes are bytes, so no release reads k/M/G its own way."""
    assert rabbit_env(host, "max_message_size") == "{ok,16777216}"
    assert rabbit_env(host, "consumer_timeout") == "{ok,1800000}"
    assert "disk_free_limit.absolute = 50000000" in host.file("/etc/rabbitmq/rabbitmq.conf").content_string


def test_the_deprecated_features_celery_uses_are_permitted(host):
    version = status(host)["rabbitmq_version"]
    if tuple(int(part) for part in version.split(".")[:2]) < (3, 13):
        pytest.skip(f"RabbitMQ {version} has no deprecated-features mechanism")
    for feature in ("transient_nonexcl_queues", "global_qos"):
        assert host.check_output(f"rabbitmqctl --quiet eval 'rabbit_deprecated_features:is_permitted({feature}).'") == "true"


def test_open_file_limit_comes_from_the_drop_in(host, cfg):
    expected = str(cfg["rabbitmq_nofile_limit"])
    pid = host.check_output("systemctl show --property MainPID --value rabbitmq-server")
    limits = host.file(f"/proc/{pid}/limits").content_string
    assert any(line.startswith("Max open files") and line.split()[3:5] == [expected, expected] for line in limits.splitlines())


def test_listeners_bind_only_where_configured(host):
    assert host.socket("tcp://0.0.0.0:5672").is_listening
    for port in (15672, 15692, 4369, 25672):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening, port
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening, f"{port} listens on every address"


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


def test_a_rejected_message_is_kept_as_a_dead_letter_and_an_expired_one_dropped(app):
    """What Celery does with a task no worker knows (reject, no requeue) must be kept; what expired (a
    periodic task nobody ran in time) must not pile up with it."""
    amqp_probe.read_all(*app, "tasks.dead-letter", requeue=False)
    with amqp_probe.connect(*app) as conn:
        channel = conn.channel()
        channel.queue_declare(queue="tasks", durable=True)
        channel.confirm_delivery()
        channel.basic_publish(exchange="", routing_key="tasks", body=b"unknown-task")
        channel.basic_publish(exchange="", routing_key="tasks", body=b"expires",
                              properties=pika.BasicProperties(expiration="1"))
        method, _props, body = channel.basic_get(queue="tasks", auto_ack=False)
        assert body == b"unknown-task"
        channel.basic_reject(delivery_tag=method.delivery_tag, requeue=False)
    time.sleep(1)
    assert amqp_probe.read_all(*app, "tasks") == [], "the expired message is still queued"
    assert amqp_probe.read_all(*app, "tasks.dead-letter", requeue=False) == ["unknown-task"]


def test_log_rotation_is_valid_and_the_broker_keeps_logging(host, app):
    rules = "/etc/logrotate.d/rabbitmq-server"
    check = host.run(f"logrotate --debug {rules}")
    # The log names contain "error"; logrotate's own complaints start with it.
    complaints = [line for line in check.stderr.splitlines() if line.lower().startswith("error")]
    assert check.rc == 0 and not complaints, check.stderr
    log = host.check_output("ls /var/log/rabbitmq/rabbit@localhost.log")
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


def converge(host, *args, check=True):
    """The scenario's converge, on this host only, with the given extra arguments."""
    return playbook("molecule/rabbitmq/converge.yml", "--limit", host.backend.host, *args, check=check)


def test_a_value_rabbitmq_refuses_puts_the_last_good_configuration_back(host, app):
    if host.backend.host != "rabbitmq-debian12":
        pytest.skip("one host is enough (RabbitMQ 3.10; 4.0 reads the same start-up log)")
    queue = f"refused-{uuid.uuid4().hex[:8]}"
    amqp_probe.publish(*app, queue, ["kept-through-the-refusal"])
    good = host.file("/etc/rabbitmq/rabbitmq.conf").content_string
    run = converge(host, "-e", json.dumps({"rabbitmq_config_extra": {"no_such_key": 1}}), check=False)
    assert run.returncode != 0
    assert "RabbitMQ did not start on the new configuration" in run.stdout and "no_such_key" in run.stdout, run.stdout[-3000:]
    assert "The broker runs again on the last configuration it ran well on" in run.stdout
    assert host.service("rabbitmq-server").is_running
    assert host.file("/etc/rabbitmq/rabbitmq.conf").content_string == good
    assert amqp_probe.read_all(*app, queue) == ["kept-through-the-refusal"]
    # The next ordinary run finds nothing to change.
    assert " changed=0 " in converge(host).stdout


def wipe_signature(host):
    """What a mistaken wipefs, or a damaged superblock, leaves: the data still there, no file system signature."""
    host.check_output(f"systemctl stop rabbitmq-server && umount {DATA_DIR}")
    host.check_output(f"cd /root && rm -f wipefs-*.bak && wipefs --all --backup {DEVICE}")
    assert host.run(f"blkid -p {DEVICE}").rc == 2


def restore_signature(host):
    backup = host.check_output("ls /root/wipefs-*.bak")
    offset = int(backup.rsplit("-", 1)[1].split(".")[0], 16)
    host.check_output(f"dd if={backup} of={DEVICE} bs=1 seek={offset} conv=notrunc status=none")
    host.check_output(f"mount {DATA_DIR} && systemctl start rabbitmq-server")


def test_a_store_whose_signature_was_wiped_is_refused_not_formatted(host, app):
    if host.backend.host != "rabbitmq-debian13":
        pytest.skip("one host is enough")
    queue = f"wiped-{uuid.uuid4().hex[:8]}"
    amqp_probe.publish(*app, queue, ["kept-on-the-wiped-volume"])
    wipe_signature(host)
    try:
        run = converge(host, check=False)
        assert run.returncode != 0
        assert "holds no file system, but /etc/fstab mounts UUID=" in run.stdout and "will not format it" in run.stdout, \
            run.stdout[-3000:]
        assert host.run(f"blkid -p {DEVICE}").rc == 2, "the role formatted the store's volume"
    finally:
        restore_signature(host)
    assert amqp_probe.read_all(*app, queue) == ["kept-on-the-wiped-volume"]


def test_tags_config_after_adding_a_volume_moves_the_store_onto_it(host, app):
    """A node that ran on its root disk, given a data device later, with a configuration-only run."""
    if host.backend.host != "rabbitmq-debian13":
        pytest.skip("one host is enough")
    queue = f"tags-config-{uuid.uuid4().hex[:8]}"
    amqp_probe.publish(*app, queue, ["moved-by-tags-config"])
    # Back to a node on its root disk with a blank spare device, as before its volume.
    host.check_output(f"systemctl stop rabbitmq-server && mkdir -p /root/store && cp -a {DATA_DIR}/. /root/store/ && umount {DATA_DIR}")
    host.check_output(f"wipefs --all {DEVICE} && sed -i '\\|{DATA_DIR}|d' /etc/fstab && rm /etc/ansible/facts.d/rabbitmq.fact")
    host.check_output(f"rm -rf {DATA_DIR}.root-disk-* && cp -a /root/store/. {DATA_DIR}/ && rm -rf /root/store")
    converge(host, "-e", "rabbitmq_data_device=")
    assert amqp_probe.read_all(*app, queue) == ["moved-by-tags-config"]
    converge(host, "--tags", "config")
    source = host.check_output(f"findmnt --noheadings --output SOURCE --mountpoint {DATA_DIR}")
    assert source == DEVICE, "--tags config did not put the store on its volume"
    assert host.service("rabbitmq-server").is_running
    assert amqp_probe.read_all(*app, queue) == ["moved-by-tags-config"]
    assert " changed=0 " in converge(host).stdout
