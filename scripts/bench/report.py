"""The bench's report: min, median and max over the runs, the ratios against their baselines, a Markdown
table with the goals, and the machine it ran on."""

import datetime
import os
import statistics
import subprocess
from pathlib import Path

from harness import RUNS, SPARES
from measures import MEMORY_CASES, MEMORY_QUERIES, MEMORY_TASKS, PREFETCH, THROUGHPUT_MESSAGES


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
    s["drain_fair_per_s"] = spread(per_run(lambda r: r["throughput"]["drain_fair"]))
    s["drain_fair_ratio"] = spread(per_run(lambda r: r["throughput"]["drain_celery"] / r["throughput"]["drain_fair"]))
    s["drain_celery_events_per_s"] = spread(per_run(lambda r: r["throughput"]["drain_celery_events"]))
    s["events_cost"] = spread(per_run(lambda r: 1 - r["throughput"]["drain_celery_events"] / r["throughput"]["drain_celery"]))
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
    ("Drain Celery / raw", "drain_ratio", "×", "", "per run: against the ceiling"),
    ("Drain, fair baseline", "drain_fair_per_s", "msg/s", "", f"a plain consumer, prefetch {PREFETCH}: decodes each task message, logs a line, then acks"),
    ("Drain Celery / fair baseline", "drain_fair_ratio", "×", "≥ 0.4", "per run"),
    ("Drain, Celery with task events", "drain_celery_events_per_s", "tasks/s", "", "the same worker with events on (Flower's), a reader of them bound"),
    ("Task events' cost", "events_cost", "share of drain", "", "1 − with events / without, per run"),
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
