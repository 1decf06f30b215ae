"""The bench's plumbing: the scenario's hosts, running commands with their output logged, Molecule,
ansible-playbook with each play timed, and the scenario's fixtures as Ansible renders them."""

import datetime
import json
import os
import shlex
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCENARIO = "bench"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
OUT = Path(os.environ.get("BENCH_OUT", ROOT / ".bench"))
APP = "workbench"
# Tiers in site.yml's order: (tier, floor.sh argument, hosts).
TIERS = [("broker", "broker", ["bench-broker"]), ("database", "database", ["bench-db"]),
         ("web", "web", ["bench-web"]), ("workers", "worker", ["bench-worker1"]), ("beat", "beat", ["bench-beat"])]
SPARES = ["bench-spare1", "bench-spare2", "bench-spare3"]
LOG = OUT / "logs"


def say(message):
    print(f"[bench {datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def run(args, log_name, env=None, check=True):
    """Runs a command, its output into a log file; returns (seconds, output)."""
    LOG.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    (LOG / f"{log_name}.log").write_text(f"$ {shlex.join(map(str, args))}\n{done.stdout}\n{done.stderr}")
    if check and done.returncode != 0:
        raise SystemExit(f"{log_name} failed (exit {done.returncode}); see {LOG / (log_name + '.log')}:\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return seconds, done.stdout


def molecule(action, log_name):
    return run(["molecule", action, "-s", SCENARIO], log_name)[0]


def inventory():
    dirs = sorted(Path.home().glob(f".ansible/tmp/molecule.*.{SCENARIO}"), key=lambda p: p.stat().st_mtime)
    return dirs[-1] / "inventory" / "ansible_inventory.yml"


def playbook(playbook_path, log_name, *extra):
    """ansible-playbook as ops run it (the project's ansible.cfg), plus a callback timing each play."""
    times = OUT / f"{log_name}.plays.json"
    env = dict(os.environ,
               ANSIBLE_CALLBACK_PLUGINS=str(HERE / "callback_plugins"),
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks,ansible.posix.timer,play_times",
               ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
               BENCH_PLAY_TIMES=str(times))
    seconds, output = run(["ansible-playbook", "-i", str(inventory()), *extra, playbook_path], log_name, env=env)
    return seconds, json.loads(times.read_text()), output


def changed_hosts(recap_output):
    return [line.split()[0] for line in recap_output.splitlines()
            if " changed=" in line and "changed=0" not in line and "unreachable=" in line]


def docker(*args, log_name=None, check=True):
    return run(["docker", *args], log_name or f"docker-{args[0]}", check=check)


def fixtures(inventory_file):
    """The scenario's fixtures as Ansible renders them for the web host (URLs are built from the inventory)."""
    names = ["django_secret_key", "django_database_url", "django_broker_url", "fixture_db_password",
             "fixture_mq_password"]
    wanted = "{{ {" + ", ".join(f"'{name}': {name}" for name in names) + "} }}"
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.json")
    done = subprocess.run(["ansible", "bench-web", "-i", str(inventory_file), "-m", "ansible.builtin.debug",
                           "-a", f"msg={wanted}"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"]["bench-web"]["msg"]
