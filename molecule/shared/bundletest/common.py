"""What every scenario's tests need: the scenario's inventory, other hosts, waiting, playbook runs, HTTP, Django."""

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_INVENTORY_FILE", "")
# The demo project's name on every host (django_app_name in the scenarios).
APP = "workbench"


def on(host, name):
    """Another host of the scenario, as testinfra reaches it."""
    return host.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


def wait_for(predicate, timeout=60, interval=1):
    """The first true value of predicate(), or None after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value or None
        time.sleep(interval)


# Plain output, all of it on stdout, whatever the caller's environment asks (Molecule forces
# colour and sends failures to stderr).
PLAIN = {**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_VERBOSE_TO_STDERR": "0",
         "ANSIBLE_DISPLAY_FAILED_STDERR": "0"}


def playbook(*args, inventory=INVENTORY, timeout=1200, secrets=(), check=True):
    """Run one of the bundle's playbooks as ops would; the output must hold none of `secrets`."""
    run = subprocess.run(["ansible-playbook", "-i", inventory, *args], cwd=PROJECT, capture_output=True, text=True,
                         timeout=timeout, env=PLAIN)
    output = run.stdout + run.stderr
    if check:
        assert run.returncode == 0, output[-5000:]
    for secret in secrets:
        assert secret not in output, f"a secret ({secret[:8]}...) shows in the playbook's output"
    return run


def recap(run):
    """{host: {ok: n, changed: n, ...}} from a playbook run's PLAY RECAP."""
    hosts = {}
    for line in run.stdout.splitlines():
        match = re.match(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", line)
        if match:
            hosts[match.group(1)] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return hosts


def changed_tasks(run):
    """(host, task name) of every task reported changed."""
    found, task = [], None
    for line in run.stdout.splitlines():
        if line.startswith("TASK [") or line.startswith("RUNNING HANDLER ["):
            task = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed: ["):
            found.append((line.split("[", 1)[1].split("]", 1)[0].split(" -> ")[0], task))
    return found


_ADDRESSES = {}


def address(host):
    """The host's address on the scenario's network, asked once per test run: the tests that poll hundreds of
    jobs a second would otherwise run as many commands on the host just to find it."""
    name = host.backend.get_hostname()
    if name not in _ADDRESSES:
        _ADDRESSES[name] = host.interface("eth0").addresses[0]
    return _ADDRESSES[name]


def http(host, path, method="GET", timeout=30, headers=None):
    """(status, headers, body) of a request to the host's port 80 from the controller, as a client sends it."""
    request = urllib.request.Request(f"http://{address(host)}{path}", method=method,
                                     headers={"Host": "localhost", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()
    except OSError:
        # A container started again may come back at another address: ask again next time.
        _ADDRESSES.pop(host.backend.get_hostname(), None)
        raise


def http_json(host, path, method="GET", timeout=30):
    """(status, decoded body) of a request whose answer is JSON (or None when it is not)."""
    status, _headers, body = http(host, path, method=method, timeout=timeout)
    try:
        return status, json.loads(body or "null")
    except ValueError:
        return status, None


def django(host, code, timeout=120):
    """Run Python in the deployed project (its settings, its Celery app); the last line it prints, as JSON."""
    out = host.check_output(f"timeout {timeout} {APP}-manage shell --no-startup --command {json.dumps(code)}")
    return json.loads(out.strip().splitlines()[-1])


def started_at(host, unit):
    return host.check_output(f"systemctl show --property ActiveEnterTimestamp --value {unit}")


def live_release(host):
    return host.file(f"/srv/{APP}/current").linked_to


def running_release(host, unit):
    """The release directory the unit's main process runs in (its working directory)."""
    pid = host.check_output(f"systemctl show --property MainPID --value {unit}")
    user = host.check_output(f"systemctl show --property User --value {unit}") or "root"
    return host.check_output(f"runuser -u {user} -- readlink /proc/{pid}/cwd")
