#!/usr/bin/env python3
"""`make bench`: how long a rollout takes and how much of the broker's speed the
deployed system uses, each figure a ratio against a baseline measured in the
same run (these machines are noisy). Prints a Markdown table and the same
figures as JSON, and writes both to $BENCH_OUT (default .bench/).

Each run converges the `bench` Molecule scenario (8 fresh containers) and
destroys it; BENCH_RUNS (default 3) runs give min, median and max. Method:
docs/BENCHMARKS.md.
"""

import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import yaml

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
THROUGHPUT_MESSAGES = int(os.environ.get("BENCH_MESSAGES", "10000"))
# Celery's prefetch on the worker node: concurrency 2 x prefetch multiplier 1.
PREFETCH = 2
MEMORY_TASKS, MEMORY_BATCH, MEMORY_QUERIES = 2000, 250, 3
# Small enough that a child recycles several times within MEMORY_TASKS; the
# warm-up goes past the first recycling so every case starts from a steady state.
MEMORY_MAX_TASKS_PER_CHILD = 500
MEMORY_WARMUP = MEMORY_MAX_TASKS_PER_CHILD + 100
MEMORY_CASES = [("on", 0), ("on", MEMORY_MAX_TASKS_PER_CHILD), ("off", 0), ("off", MEMORY_MAX_TASKS_PER_CHILD)]

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


def scenario_vars():
    config = yaml.safe_load((ROOT / "molecule" / SCENARIO / "molecule.yml").read_text())
    groups = config["provisioner"]["inventory"]["group_vars"]
    return groups


# --- 1. the floor: the same packages and services, no Ansible -------------

def floor(run_index):
    """Each tier's floor.sh in site.yml's order, one tier at a time like site.yml; seconds per tier."""
    groups = scenario_vars()
    broker_password = next(u["password"] for u in groups["broker"]["rabbitmq_users"] if u["name"] == APP)
    env = {
        "FLOOR_SECRET_KEY": groups["all"]["django_secret_key"],
        "FLOOR_DATABASE_URL": groups["all"]["django_database_url"],
        "FLOOR_BROKER_URL": groups["all"]["django_broker_url"],
        "FLOOR_BROKER_PASSWORD": broker_password,
        "FLOOR_DATABASE_PASSWORD": groups["database"]["postgresql_users"][0]["password"],
    }
    # pip inside the hosts uses the controller's index and certificates, as the django role does.
    if os.environ.get("PIP_INDEX_URL"):
        env["PIP_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
    if os.environ.get("PIP_CERT"):
        env["PIP_CERT"] = "/opt/bench-pip-ca.crt"
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "project.tar"
        with tarfile.open(project, "w") as tar:
            tar.add(ROOT / "files" / "demo-project", arcname=".",
                    filter=lambda info: None if "__pycache__" in info.name else info)
        seconds = {}
        for tier, argument, hosts in TIERS:
            started = time.monotonic()
            threads, failures = [], []
            for host in hosts:
                def one(host=host):
                    try:
                        docker("cp", str(HERE / "floor.sh"), f"{host}:/opt/bench-floor.sh", log_name=f"r{run_index}-floor-cp-{host}")
                        if argument in ("web", "worker", "beat"):
                            docker("cp", str(project), f"{host}:/opt/bench-project.tar", log_name=f"r{run_index}-floor-cp-{host}")
                            if os.environ.get("PIP_CERT"):
                                docker("cp", os.environ["PIP_CERT"], f"{host}:/opt/bench-pip-ca.crt",
                                       log_name=f"r{run_index}-floor-cp-{host}")
                        flags = [item for key, value in env.items() for item in ("-e", f"{key}={value}")]
                        docker("exec", *flags, host, "bash", "/opt/bench-floor.sh", argument, log_name=f"r{run_index}-floor-{host}")
                    except SystemExit as error:
                        failures.append(str(error))
                threads.append(threading.Thread(target=one))
                threads[-1].start()
            for thread in threads:
                thread.join()
            if failures:
                raise SystemExit(failures[0])
            seconds[tier] = time.monotonic() - started
    return seconds


# --- 3. throughput: Celery through the app's configuration against raw AMQP --

def app_python(host, *args, background=False, log_name="probe"):
    """probe.py on a deployed host, with the app's venv, environment and user."""
    command = (f"set -a; . /etc/{APP}/env; set +a; cd /srv/{APP}/current; "
               f"PYTHONPATH=/srv/{APP}/current exec runuser -u {APP} -- venv/bin/python /opt/bench-probe.py "
               + " ".join(shlex.quote(str(a)) for a in args))
    argv = ["docker", "exec", host, "sh", "-c", command]
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return json.loads(run(argv, log_name)[1].strip().splitlines()[-1])


def finish(process, what):
    out, err = process.communicate(timeout=900)
    if process.returncode != 0:
        raise SystemExit(f"{what} failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def throughput(run_index):
    for host in ("bench-web", "bench-worker1"):
        docker("cp", str(HERE / "probe.py"), f"{host}:/opt/bench-probe.py", log_name=f"r{run_index}-probe-cp")
        docker("exec", host, "chmod", "0644", "/opt/bench-probe.py", log_name=f"r{run_index}-probe-cp")
    n = THROUGHPUT_MESSAGES
    worker = "celery-worker@default.service"
    # Celery: publish with the workers stopped, then time the drain once they start.
    docker("exec", "bench-worker1", "systemctl", "stop", worker, log_name=f"r{run_index}-stop-worker")
    celery_publish = app_python("bench-web", "celery-publish", n, log_name=f"r{run_index}-celery-publish")
    watcher = app_python("bench-web", "watch-drain", "celery", n + 1, background=True)
    docker("exec", "bench-worker1", "systemctl", "start", worker, log_name=f"r{run_index}-start-worker")
    celery_drain = finish(watcher, "watching the celery queue drain")
    # Raw AMQP: the same, with a plain publisher and consumer.
    raw_publish = app_python("bench-web", "raw-publish", n, "bench.raw", log_name=f"r{run_index}-raw-publish")
    watcher = app_python("bench-web", "watch-drain", "bench.raw", n, background=True)
    consumer = app_python("bench-worker1", "raw-consume", "bench.raw", PREFETCH, background=True)
    raw_drain = finish(watcher, "watching the raw queue drain")
    finish(consumer, "the raw consumer")
    rate = lambda m: m["messages"] / m["seconds"]  # noqa: E731
    drain = lambda m: m["messages"] / (m["empty"] - m["first"])  # noqa: E731
    return {
        "publish_celery": rate(celery_publish), "publish_raw": rate(raw_publish),
        "drain_celery": drain(celery_drain), "drain_raw": drain(raw_drain),
    }


# --- 5. memory: DEBUG and max-tasks-per-child --------------------------------

def memory(run_index):
    results = {}
    for debug, mtpc in MEMORY_CASES:
        key = f"debug_{debug}_mtpc_{mtpc or 'none'}"
        results[key] = app_python("bench-worker1", "memory", debug, mtpc, MEMORY_WARMUP, MEMORY_TASKS,
                                  MEMORY_BATCH, MEMORY_QUERIES, log_name=f"r{run_index}-memory-{key}")
    return results


# --- a run -------------------------------------------------------------------

def one_run(index):
    figures = {}
    say(f"run {index + 1}/{RUNS}: containers for the floor")
    figures["containers_up"] = [molecule("create", f"r{index}-create-floor") + molecule("prepare", f"r{index}-prepare-floor")]
    say("floor: the same packages and services with a plain script")
    figures["floor"] = floor(index)
    figures["containers_down"] = [molecule("destroy", f"r{index}-destroy-floor")]
    say("fresh containers for the bundle")
    figures["containers_up"].append(molecule("create", f"r{index}-create") + molecule("prepare", f"r{index}-prepare"))
    say("first converge of site.yml")
    seconds, plays, _ = playbook("playbooks/site.yml", f"r{index}-converge")
    figures["converge"] = seconds
    figures["converge_plays"] = {p["hosts"]: p["seconds"] for p in plays}
    figures["converge_broker"] = sum(p["seconds"] for p in plays if p["hosts"] == "broker")
    say("no-change re-run of site.yml")
    seconds, plays, output = playbook("playbooks/site.yml", f"r{index}-rerun")
    figures["rerun"] = seconds
    figures["rerun_plays"] = {p["hosts"]: p["seconds"] for p in plays}
    figures["rerun_changed_hosts"] = changed_hosts(output)
    say("throughput: Celery against raw AMQP")
    figures["throughput"] = throughput(index)
    say("memory of a worker over many tasks")
    figures["memory"] = memory(index)
    figures["scale_out"] = []
    for number, spare in enumerate(SPARES, start=2):
        say(f"add-worker.yml: worker node {number} ({spare})")
        extra = OUT / f"workers-{number}.yml"
        extra.write_text(json.dumps({"all": {"children": {"workers": {"hosts": {s: {} for s in SPARES[:number - 1]}}}}}))
        seconds, _, _ = playbook("playbooks/add-worker.yml", f"r{index}-add-worker-{number}",
                                 "-i", str(extra), "-e", f"new_worker={spare}")
        figures["scale_out"].append(seconds)
    figures["containers_down"].append(molecule("destroy", f"r{index}-destroy"))
    return figures


# --- the report ----------------------------------------------------------------

def spread(values):
    values = sorted(values)
    return {"min": values[0], "median": statistics.median(values), "max": values[-1], "n": len(values)}


def machine():
    meminfo = Path("/proc/meminfo").read_text().split()
    docker_version = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                    capture_output=True, text=True).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024, 1),
        "docker": docker_version,
        "image": os.environ.get("DEBIAN13_IMAGE", "bundle-debian:13"),
        "date": datetime.date.today().isoformat(),
    }


def summarize(runs):
    per_run = lambda f: [f(r) for r in runs]  # noqa: E731
    floor_total = lambda r: sum(r["floor"].values())  # noqa: E731
    s = {
        "containers_up_s": spread([x for r in runs for x in r["containers_up"]]),
        "containers_down_s": spread([x for r in runs for x in r["containers_down"]]),
        "broker_floor_s": spread(per_run(lambda r: r["floor"]["broker"])),
        "broker_converge_s": spread(per_run(lambda r: r["converge_broker"])),
        "broker_ratio": spread(per_run(lambda r: r["converge_broker"] / r["floor"]["broker"])),
        "stack_floor_s": spread(per_run(floor_total)),
        "stack_converge_s": spread(per_run(lambda r: r["converge"])),
        "stack_ratio": spread(per_run(lambda r: r["converge"] / floor_total(r))),
        "rerun_s": spread(per_run(lambda r: r["rerun"])),
        "rerun_fraction": spread(per_run(lambda r: r["rerun"] / r["converge"])),
        "rerun_changed_hosts": sorted({h for r in runs for h in r["rerun_changed_hosts"]}),
    }
    for side in ("publish", "drain"):
        s[f"{side}_raw_per_s"] = spread(per_run(lambda r: r["throughput"][f"{side}_raw"]))
        s[f"{side}_celery_per_s"] = spread(per_run(lambda r: r["throughput"][f"{side}_celery"]))
        s[f"{side}_ratio"] = spread(per_run(lambda r: r["throughput"][f"{side}_celery"] / r["throughput"][f"{side}_raw"]))
    for position in range(len(SPARES)):
        s[f"add_worker_{position + 2}_s"] = spread(per_run(lambda r: r["scale_out"][position]))
    s["add_worker_ratio_4th_2nd"] = spread(per_run(lambda r: r["scale_out"][-1] / r["scale_out"][0]))
    for debug, mtpc in MEMORY_CASES:
        key = f"debug_{debug}_mtpc_{mtpc or 'none'}"
        s[f"memory_{key}_growth_kb_per_1000"] = spread(per_run(lambda r: r["memory"][key]["growth_kb_per_1000"]))
        s[f"memory_{key}_max_rss_kb"] = spread(per_run(lambda r: r["memory"][key]["max_rss_kb"]))
    return s


ROWS = [
    # (label, key, unit, goal, method)
    ("Containers created and booted (8 hosts)", "containers_up_s", "s", "", "molecule create + prepare; shown apart, not in any figure below"),
    ("Containers destroyed", "containers_down_s", "s", "", "molecule destroy"),
    ("Broker: floor", "broker_floor_s", "s", "", "floor.sh broker: apt install, volume, start, vhost and user"),
    ("Broker: first converge", "broker_converge_s", "s", "", "the broker play of site.yml in fresh containers"),
    ("Broker: converge / floor", "broker_ratio", "×", "≤ 1.3", "per run"),
    ("Stack: floor", "stack_floor_s", "s", "", "floor.sh per tier, in site.yml's order"),
    ("Stack: first converge", "stack_converge_s", "s", "", "site.yml in fresh containers"),
    ("Stack: converge / floor", "stack_ratio", "×", "≤ 1.3", "per run"),
    ("No-change re-run", "rerun_s", "s", "", "site.yml again on the converged stack"),
    ("Re-run / first converge", "rerun_fraction", "×", "≤ 0.2", "per run"),
    ("Publish, raw AMQP", "publish_raw_per_s", "msg/s", "", f"{THROUGHPUT_MESSAGES} persistent messages, confirms, from the web host"),
    ("Publish, Celery", "publish_celery_per_s", "tasks/s", "", "the same through the app's Celery configuration"),
    ("Publish Celery / raw", "publish_ratio", "×", "≥ 0.8", "per run"),
    ("Drain, raw AMQP", "drain_raw_per_s", "msg/s", "", f"one consumer, prefetch {PREFETCH}, ack each, on the worker node"),
    ("Drain, Celery", "drain_celery_per_s", "tasks/s", "", "the deployed worker (concurrency 2, prefetch 1 per process)"),
    ("Drain Celery / raw", "drain_ratio", "×", "≥ 0.4", "per run"),
    ("add-worker: 2nd node", "add_worker_2_s", "s", "", "add-worker.yml, a fresh host"),
    ("add-worker: 3rd node", "add_worker_3_s", "s", "", ""),
    ("add-worker: 4th node", "add_worker_4_s", "s", "", ""),
    ("add-worker 4th / 2nd", "add_worker_ratio_4th_2nd", "×", "≤ 1.2", "per run"),
] + [
    (f"Worker memory growth, DEBUG {debug}, max-tasks-per-child {mtpc or 'none'}",
     f"memory_debug_{debug}_mtpc_{mtpc or 'none'}_growth_kb_per_1000", "kB / 1000 tasks", "",
     f"{MEMORY_TASKS} tasks of {MEMORY_QUERIES} queries, one process; slope of its RSS")
    for debug, mtpc in MEMORY_CASES
]


def markdown(summary, info):
    def fmt(value):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"
    lines = [
        f"Machine: {info['cores']} cores, {info['memory_gib']} GiB, Docker {info['docker']}, "
        f"hosts {info['image']}; {info['date']}; {RUNS} run(s), each in fresh containers.",
        "",
        "| Measure | Unit | n | min | median | max | Goal | Method |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, key, unit, goal, method in ROWS:
        v = summary[key]
        lines.append(f"| {label} | {unit} | {v['n']} | {fmt(v['min'])} | {fmt(v['median'])} | {fmt(v['max'])} | {goal} | {method} |")
    if summary["rerun_changed_hosts"]:
        lines.append("")
        lines.append(f"Warning: the no-change re-run changed something on {', '.join(summary['rerun_changed_hosts'])}.")
    return "\n".join(lines)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    info = machine()
    say(f"{RUNS} run(s); logs in {LOG}")
    runs = []
    try:
        molecule("destroy", "destroy-leftovers")
        for index in range(RUNS):
            runs.append(one_run(index))
            (OUT / "runs.json").write_text(json.dumps(runs, indent=1))
    finally:
        say("cleaning up")
        molecule("destroy", "destroy-final")
    summary = summarize(runs)
    table = markdown(summary, info)
    document = {"machine": info, "runs": runs, "summary": summary}
    (OUT / "results.md").write_text(table + "\n")
    (OUT / "results.json").write_text(json.dumps(document, indent=1))
    print(table)
    print()
    print(json.dumps({"machine": info, "summary": summary}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
