"""The whole system: jobs through the web app, both workers busy, DEBUG off everywhere, the Erlang ports
closed, a release that adds a task rolled out under load with nothing lost, a run cut off after the switch
healed by the next, and a new worker over SSH while another is down, with nothing else restarted."""

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from bundletest.common import APP, django, http_json, live_release, on, playbook, running_release, started_at, wait_for
from stack import (APP_UNITS, DJANGO_HOSTS, SECRETS, UNITS, WORKERS, monitor_api, queue_depths, release_with_new_task,
                   start_job, wait_finished)


def test_a_job_splits_into_small_tasks_that_both_workers_process(host):
    job = start_job(host, 200)
    state = wait_finished(host, [job])[job]
    assert (state["done"], state["failed"]) == (200, 0)
    assert set(state["processed_by"]) == set(WORKERS), state["processed_by"]


def test_the_web_host_publishes_jobs_without_consuming_from_the_broker(host):
    """A publisher that subscribes to results keeps a consumer (and a connection) per publishing thread, on a
    reply queue named after the thread: reused thread ids shared a queue, and one thread's closing connection
    deleted it under another's publish (a job answered 503, not queued)."""
    jobs = [start_job(host, 2) for _ in range(6)]
    assert all(state["done"] == 2 for state in wait_finished(host, jobs).values())
    web = on(host, "stack-web").interface("eth0").addresses[0]
    channels = on(host, "stack-broker").check_output("rabbitmqctl --quiet list_channels -p workbench pid name consumer_count")
    from_web = [line for line in channels.splitlines()[1:] if f"{web}:" in line.split("\t")[1] and line.split("\t")[2] != "0"]
    assert not from_web, f"the web host consumes from the broker: {from_web}"


def test_debug_is_off_on_every_host_that_runs_django(host):
    for name in DJANGO_HOSTS:
        out = on(host, name).check_output(
            f"{APP}-manage shell --no-startup --command 'from django.conf import settings; print(settings.DEBUG)'")
        assert out.strip().splitlines()[-1] == "False", name


def test_epmd_and_the_erlang_distribution_are_closed_to_other_hosts(host):
    def reachable(port):
        return host.run(f"timeout 5 bash -c '</dev/tcp/stack-broker/{port}'").rc == 0

    assert reachable(5672), "AMQP must stay open to the application's hosts"
    assert not reachable(4369), "epmd answers other hosts"
    assert not reachable(25672), "the Erlang distribution answers other hosts"
    broker = on(host, "stack-broker")
    assert broker.socket("tcp://127.0.0.1:4369").is_listening
    assert broker.socket("tcp://127.0.0.1:25672").is_listening


def units_on_the_live_release(host):
    """{(host, unit): (running release, live release)} for every unit of the application."""
    found = {}
    for name, units in APP_UNITS.items():
        target = on(host, name)
        live = live_release(target)
        for unit in units:
            found[(name, unit)] = (running_release(target, unit), live)
    return found


def assert_every_unit_runs(host, release):
    for (name, unit), (running, live) in units_on_the_live_release(host).items():
        assert live.endswith(release), f"{name}: the live release is {live}, not {release}"
        assert running == live, f"{name}: {unit} runs {running}, the live release is {live}"


def release_id(host, source):
    """The id the django role gives a directory's code (its checksum), computed as it does."""
    out = subprocess.run(
        f"cd {source} && find . -type f ! -path '*/__pycache__/*' ! -path './.git/*' ! -name '*.pyc' -print0"
        " | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum", shell=True, check=True, capture_output=True, text=True)
    return out.stdout.split()[0][:12]


def test_a_release_that_adds_a_task_rolls_out_under_load_and_loses_nothing(host, tmp_path):
    """The new web hosts publish a task the old workers do not know: the workers go first, so none is lost."""
    source = release_with_new_task(tmp_path, "v2")
    jobs, failures, done = [], [], threading.Event()

    def load():
        while not done.is_set():
            try:
                status, body = http_json(host, "/jobs/?parts=10", method="POST")
                (jobs if status == 202 else failures).append(body["job"] if status == 202 else (status, body))
            except OSError as error:
                failures.append(repr(error))
            time.sleep(0.5)

    client = threading.Thread(target=load)
    client.start()
    try:
        playbook("playbooks/deploy.yml", "-e", f"django_source_path={source}", secrets=SECRETS)
        # Jobs published by the new web hosts only, through the new task.
        time.sleep(3)
    finally:
        done.set()
        client.join()
    assert not failures, failures[:5]
    assert len(jobs) > 10
    states = wait_finished(host, jobs)
    assert sum(state["done"] for state in states.values()) == 10 * len(jobs), [s for s in states.values() if s["done"] != 10][:3]
    assert sum(state["failed"] for state in states.values()) == 0
    print(f"rollout under load: {len(jobs)} jobs ({10 * len(jobs)} parts) accepted during deploy.yml, all done, none failed")
    assert_every_unit_runs(host, release_id(host, source))
    assert "analyse_item_v2" in on(host, "stack-web").check_output(f"cat /srv/{APP}/current/analysis/jobs.py")


def rejections(host, task_id):
    """How many times the workers rejected the task's message as unknown: Celery logs the message's
    headers, its id among them, after "Received unregistered task"."""
    return sum(int(on(host, name).check_output(
        f"cat /var/log/celery/default.log 2>/dev/null | grep -c \"'id': '{task_id}'\" || true")) for name in [*WORKERS, "stack-spare"])


def test_a_message_no_worker_can_run_is_kept_in_the_dead_letter_queue_and_can_be_requeued(host):
    worker = on(host, WORKERS[0])
    assert queue_depths(host).get("celery.dead-letter", 0) == 0, "the deploy left messages in the dead-letter queue"
    task_id = django(worker, "from workbench.celery import app; import json; print(json.dumps(app.send_task('analysis.tasks.no_such_task', args=[1]).id))")
    assert wait_for(lambda: queue_depths(host).get("celery.dead-letter", 0) == 1, timeout=60), \
        f"the rejected message is not in the dead-letter queue: {queue_depths(host)}"
    assert rejections(host, task_id) == 1
    # The documented command sends it back; no worker knows the task yet, so it is rejected and kept again.
    out = worker.check_output("celery-worker-control requeue-dead-letters")
    assert re.search(r"celery[.]dead-letter: [1-9][0-9]* message[(]s[)] sent back", out), out
    # Delivered again and rejected again: a second rejection logged (a busy worker may take a while to log it).
    assert wait_for(lambda: rejections(host, task_id) >= 2, timeout=180), \
        f"the requeued message was not delivered again ({rejections(host, task_id)} rejection(s) logged)"
    assert wait_for(lambda: queue_depths(host).get("celery.dead-letter", 0) >= 1, timeout=60)


def test_a_new_worker_over_ssh_while_another_is_down_gets_the_live_release(host, tmp_path):
    spare = on(host, "stack-spare")
    address = spare.interface("eth0").addresses[0]
    ssh_inventory = tmp_path / "spare.yml"
    ssh = {"ansible_connection": "ssh", "ansible_user": "ops", "ansible_become": True,
           "ansible_ssh_private_key_file": f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/ops_key",
           "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5"}
    ssh_inventory.write_text(json.dumps({"all": {"children": {"workers": {"hosts": {
        "stack-spare": {**ssh, "ansible_host": address},
        # The stopped worker as a real dead host looks to Ansible: SSH to it times out.
        "stack-worker2": {**ssh, "ansible_host": "192.0.2.1"},
    }}}}}))
    live = live_release(on(host, "stack-web"))
    subprocess.run(["docker", "stop", "stack-worker2"], check=True, capture_output=True)
    try:
        others = {key: value for key, value in UNITS.items() if key != "stack-worker2"}
        before = {(name, unit): started_at(on(host, name), unit) for name, units in others.items() for unit in units}
        playbook("-i", str(ssh_inventory), "playbooks/add-worker.yml", "-e", "new_worker=stack-spare", secrets=SECRETS)
        after = {(name, unit): started_at(on(host, name), unit) for name, units in others.items() for unit in units}
        assert after == before, "a unit on another host restarted"
        assert Path(live_release(spare)).name == Path(live).name, "the new worker does not run the live release"
        assert running_release(spare, "celery-worker@default.service") == live_release(spare)
        job = start_job(host, 600)
        state = wait_finished(host, [job])[job]
        assert "stack-spare" in state["processed_by"], state["processed_by"]
        print(f"add-worker with stack-worker2 down: 600 parts, processed by {state['processed_by']}")
        # The monitoring host watches it from now on.
        assert wait_for(lambda: any(t["labels"]["instance"] == "stack-spare:9100" and t["health"] == "up"
                                    for t in monitor_api(host, 9090, "/api/v1/targets")["data"]["activeTargets"]),
                        timeout=60), "the new worker is not scraped"
    finally:
        subprocess.run(["docker", "start", "stack-worker2"], check=True, capture_output=True)
        worker2 = on(host, "stack-worker2")
        assert wait_for(lambda: worker2.run("systemctl is-active celery-worker@default").rc == 0, timeout=120)


def test_a_run_cut_off_after_the_switch_is_healed_by_the_next_run_and_a_rollback_goes_back_once(host, tmp_path):
    """The first worker, which also runs beat (two tiers on one host): a deploy fails there right after the
    django role switched its release (the log directory cannot be made under /proc), so nothing that play
    would have restarted restarts; the next plain run must bring both units onto the live release. Then a
    rollback there: the worker play and beat's play both deploy to the host, and it must go back one release,
    not there and back again."""
    worker = on(host, WORKERS[0])
    # The live code (v2's task, which the web hosts publish) as a new release.
    source = release_with_new_task(tmp_path, "v2", version="v3")
    limit = ["--limit", WORKERS[0], "-e", f"django_source_path={source}"]
    cut = playbook("playbooks/deploy.yml", *limit, "-e", "celery_worker_log_dir=/proc/cut-off", check=False, secrets=SECRETS)
    assert cut.returncode != 0
    assert live_release(worker).endswith(release_id(host, source)), "the run failed before the switch"
    assert running_release(worker, "celery-worker@default.service") != live_release(worker)
    playbook("playbooks/deploy.yml", *limit, secrets=SECRETS)
    for unit in APP_UNITS[WORKERS[0]]:
        assert running_release(worker, unit) == live_release(worker), f"{unit} still runs the old release"
    job = start_job(host, 50)
    assert wait_finished(host, [job])[job]["done"] == 50
    # Back to the release before: the one the rest of the system runs.
    before = Path(live_release(on(host, "stack-web"))).name
    playbook("playbooks/deploy.yml", "--limit", WORKERS[0], "-e", "django_rollback=true", secrets=SECRETS)
    assert Path(live_release(worker)).name == before, f"rolled back to {live_release(worker)}, not {before}"
    for unit in APP_UNITS[WORKERS[0]]:
        assert running_release(worker, unit) == live_release(worker), f"{unit} does not run the release rolled back to"


GREP_SECRETS = " ".join(f"-e '{secret}'" for secret in SECRETS)


def test_no_secret_shows_in_any_host_log(host):
    for name in [*UNITS, "stack-spare"]:
        found = on(host, name).run(
            f"grep -rIlF {GREP_SECRETS} /var/log; journalctl --no-pager --output cat | grep -cF {GREP_SECRETS}")
        assert found.stdout.strip() in ("0", ""), f"{name}: {found.stdout}"


def playbook_runs_in_the_log():
    """The records of every ansible-playbook run in the scenario's ansible.log
    (converge, the idempotence re-run, the tests' own runs), without those of
    other tools that share the log, such as the verifier's dump of the test
    inventory (which holds these fixture values by design)."""
    log = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "ansible.log"
    records, pid = {}, None
    for line in log.read_text(errors="replace").splitlines():
        match = re.match(r"^\d{4}-\d\d-\d\d [\d:,]+ p=(\d+) ", line)
        pid = match.group(1) if match else pid  # a line without the prefix continues the record above
        records.setdefault(pid, []).append(line)
    return "\n".join(line for lines in records.values() if any("PLAY RECAP" in x for x in lines) for line in lines)


def test_no_secret_shows_in_the_converge_output():
    text = playbook_runs_in_the_log()
    assert "rabbitmq : Install the Erlang cookie" in text, "the log does not hold the converge"
    assert "django : Write the application's environment file" in text
    for secret in SECRETS:
        assert secret not in text, f"a secret ({secret[:8]}...) shows in the converge output"


def test_files_holding_secrets_are_not_world_readable(host):
    """Every file on any host that holds a secret, wherever the roles put it."""
    holders = {}
    for name in [*UNITS, "stack-spare"]:
        found = on(host, name).run(
            f"grep -rlIF {GREP_SECRETS} /etc /srv /var/lib/rabbitmq /root /home 2>/dev/null"
            " | grep -v /venv/ | xargs -r stat -c '%a %U:%G %n'")
        for line in found.stdout.splitlines():
            mode, owner, path = line.split(" ", 2)
            holders[f"{name}:{path}"] = (mode, owner)
            assert int(mode, 8) & 0o007 == 0, f"{name}: {path} is {mode} {owner}, readable by anyone"
    # The test must have found the known holders, or it proves nothing.
    assert holders["stack-broker:/var/lib/rabbitmq/.erlang.cookie"] == ("400", "rabbitmq:rabbitmq")
    assert holders[f"stack-web:/etc/{APP}/env"][0] == "640"
    assert holders[f"stack-worker1:/etc/{APP}/env"][0] == "640"
