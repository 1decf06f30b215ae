"""The whole system: jobs through the web app, both workers busy, DEBUG off everywhere,
a code deploy under load with nothing lost, a new worker over SSH with nothing else restarted."""

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
APP = "workbench"
WORKERS = ["stack-worker1", "stack-worker2"]
DJANGO_HOSTS = ["stack-web", *WORKERS, "stack-beat"]
# Units whose start time must not move when a worker node is added.
UNITS = {
    "stack-broker": ["rabbitmq-server.service"],
    "stack-db": ["postgresql@17-main.service"],  # Debian 13's cluster
    "stack-web": ["gunicorn.service", "nginx.service"],
    "stack-worker1": ["celery-worker@default.service"],
    "stack-worker2": ["celery-worker@default.service"],
    "stack-beat": ["celery-beat.service"],
}


@pytest.fixture(autouse=True)
def once(host):
    """These tests are about the system, not a host: run them once, from the web host's point of view."""
    if host.backend.host != "stack-web":
        pytest.skip("system tests run once")


def on(host, name):
    return host.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


def web_request(host, path, method="GET"):
    address = host.interface("eth0").addresses[0]
    request = urllib.request.Request(f"http://{address}{path}", method=method, headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def start_job(host, parts):
    status, body = web_request(host, f"/jobs/?parts={parts}", method="POST")
    assert status == 202, body
    return body["job"]


def wait_finished(host, jobs, timeout=300):
    deadline = time.monotonic() + timeout
    pending = set(jobs)
    states = {}
    while pending and time.monotonic() < deadline:
        for job in list(pending):
            states[job] = web_request(host, f"/jobs/{job}/")[1]
            if states[job]["finished"]:
                pending.discard(job)
        time.sleep(1)
    assert not pending, {job: states[job] for job in pending}
    return states


def playbook(*args, timeout=1200):
    run = subprocess.run(["ansible-playbook", "-i", INVENTORY, *args], cwd=PROJECT, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    for secret in SECRETS:
        assert secret not in run.stdout + run.stderr, f"a secret ({secret[:8]}...) shows in the playbook's output"
    return run.stdout


def start_times(host):
    return {
        (name, unit): on(host, name).check_output(f"systemctl show --property ActiveEnterTimestamp --value {unit}")
        for name, units in UNITS.items() for unit in units
    }


def test_a_job_splits_into_small_tasks_that_both_workers_process(host):
    job = start_job(host, 200)
    state = wait_finished(host, [job])[job]
    assert state["done"] == 200
    assert set(state["processed_by"]) == set(WORKERS), state["processed_by"]


def test_debug_is_off_on_every_host_that_runs_django(host):
    for name in DJANGO_HOSTS:
        out = on(host, name).check_output(
            f"{APP}-manage shell --no-startup --command 'from django.conf import settings; print(settings.DEBUG)'")
        assert out.strip().splitlines()[-1] == "False", name


def test_a_code_deploy_under_load_fails_no_request_and_loses_no_task(host, tmp_path):
    source = tmp_path / "project"
    shutil.copytree(PROJECT / "files/demo-project", source)
    (source / "analysis/static/analysis/version.txt").write_text(f"{time.time_ns()}\n")
    jobs, failures, done = [], [], threading.Event()

    def load():
        while not done.is_set():
            try:
                status, body = web_request(host, "/jobs/?parts=20", method="POST")
                (jobs if status == 202 else failures).append(body["job"] if status == 202 else (status, body))
            except OSError as error:
                failures.append(repr(error))
            time.sleep(0.2)

    client = threading.Thread(target=load)
    client.start()
    try:
        playbook("playbooks/deploy.yml", "-e", f"django_source_path={source}")
    finally:
        done.set()
        client.join()
    assert not failures, failures[:5]
    assert len(jobs) > 10
    states = wait_finished(host, jobs)
    assert sum(state["done"] for state in states.values()) == 20 * len(jobs)
    live = {on(host, name).file(f"/srv/{APP}/current").linked_to for name in DJANGO_HOSTS}
    assert len(live) == 1, live


def test_a_new_worker_over_ssh_consumes_tasks_and_nothing_else_restarts(host, tmp_path):
    spare = on(host, "stack-spare")
    address = spare.interface("eth0").addresses[0]
    ssh_inventory = tmp_path / "spare.yml"
    ssh_inventory.write_text(json.dumps({"all": {"children": {"workers": {"hosts": {"stack-spare": {
        "ansible_connection": "ssh",
        "ansible_host": address,
        "ansible_user": "ops",
        "ansible_become": True,
        "ansible_ssh_private_key_file": f"{os.environ['MOLECULE_EPHEMERAL_DIRECTORY']}/ops_key",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }}}}}}))
    before = start_times(host)
    playbook("-i", str(ssh_inventory), "playbooks/add-worker.yml", "-e", "new_worker=stack-spare")
    assert start_times(host) == before, "a unit on another host restarted"
    assert spare.service("celery-worker@default").is_running
    job = start_job(host, 600)
    state = wait_finished(host, [job])[job]
    assert "stack-spare" in state["processed_by"], state["processed_by"]


SECRETS = ["stack-db-password", "stack-mq-password", "stack-ops-password", "stack-secret-key-0123456789",
           "stack-cookie-0123456789"]
GREP_SECRETS = " ".join(f"-e {secret}" for secret in SECRETS)


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
