#!/usr/bin/env python3
"""`make soak`: a million small re-entrant tasks through the deployed demo stack (`make demo`), and what
that does to it. Not part of `make test`.

A publisher on the web host sends SOAK_TASKS (default 1,000,000) tasks through the application's own Celery
configuration (persistent, confirmed), held at most SOAK_MAX_BACKLOG (20,000) messages ahead of the workers;
both workers run them. Every SOAK_REPORT_EVERY (100,000) tasks done, a row: the throughput since the last
row, the largest worker child's resident memory, the broker's memory and its store volume's use, and the
size of every log the system writes (each directory's largest file and its total). At the end: every task
ran, counted in the database (lost = published - recorded), and how many were delivered again (duplicates a
late acknowledgement allows: each says so in its worker's log).
"""

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APP = "workbench"
WEB, DB, BROKER, WORKERS = "stack-web", "stack-db", "stack-broker", ["stack-worker1", "stack-worker2"]
TASKS = int(os.environ.get("SOAK_TASKS", "1000000"))
REPORT = int(os.environ.get("SOAK_REPORT_EVERY", "100000"))
MAX_BACKLOG = int(os.environ.get("SOAK_MAX_BACKLOG", "20000"))
LOG_DIRS = {BROKER: ["/var/log/rabbitmq"], WEB: ["/var/log/nginx", "/var/log/gunicorn"],
            **{worker: ["/var/log/celery"] for worker in WORKERS}}


def sh(host, command, check=True):
    done = subprocess.run(["docker", "exec", host, "sh", "-c", command], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"{host}: {command} failed: {done.stderr[-2000:]}")
    return done.stdout


def sql(query):
    return sh(DB, f"runuser -u postgres -- psql -d {APP} -Atc {shlex.quote(query)}").strip()


def stack_is_up():
    done = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", WEB], capture_output=True, text=True)
    return done.stdout.strip() == "true"


def largest_child_rss_kb(worker):
    """The largest resident memory among the pools' child processes (a child's parent is a celery process)."""
    rows = [line.split(None, 3) for line in sh(worker, "ps -eo pid=,ppid=,rss=,args=").splitlines()]
    celery = {pid for pid, _, _, args in rows if "celery" in args and " worker" in args}
    return max((int(rss) for pid, ppid, rss, args in rows if pid in celery and ppid in celery), default=0)


def broker_rss_kb():
    return max(int(rss) for rss in sh(BROKER, "ps -C beam.smp -o rss=").split())


def store_used_mb():
    return int(sh(BROKER, "df -B1M --output=used /var/lib/rabbitmq/mnesia | tail -1").strip())


def log_sizes_mb():
    """{directory on host: (largest file, MB), total MB}, rotated files included."""
    sizes = {}
    for host, dirs in LOG_DIRS.items():
        for directory in dirs:
            files = [line.split(" ", 1) for line in sh(host, f"find {directory} -type f -printf '%s %f\\n' 2>/dev/null",
                                                        check=False).splitlines() if line]
            if files:
                biggest = max(files, key=lambda f: int(f[0]))
                sizes[f"{host}:{directory}"] = (biggest[1], int(biggest[0]) / 2**20, sum(int(f[0]) for f in files) / 2**20)
    return sizes


def sample():
    return {"worker_child_rss_mb": max(largest_child_rss_kb(w) for w in WORKERS) / 1024,
            "broker_rss_mb": broker_rss_kb() / 1024, "store_used_mb": store_used_mb(), "logs": log_sizes_mb()}


def row(done, rate, s):
    logs = "; ".join(f"{where} {name} {size:.1f} (all {total:.1f})" for where, (name, size, total) in s["logs"].items())
    return (f"| {done:>9,} | {rate:>7.0f} | {s['worker_child_rss_mb']:>6.1f} | {s['broker_rss_mb']:>6.1f} | "
            f"{s['store_used_mb']:>5} | {logs} |")


def main():
    if not stack_is_up():
        print("The demo stack is not up: starting it (make demo).", flush=True)
        subprocess.run([str(ROOT / "scripts/demo.sh"), "up"], check=True)
    run = uuid.uuid4().hex[:8]
    pattern = f"soak-{run}-%"
    subprocess.run(["docker", "cp", str(HERE / "publish.py"), f"{WEB}:/opt/soak-publish.py"], check=True)
    sh(WEB, "chmod 0644 /opt/soak-publish.py")
    command = (f"set -a; . /etc/{APP}/env; set +a; cd /srv/{APP}/current; PYTHONPATH=/srv/{APP}/current "
               f"exec runuser -u {APP} -- venv/bin/python /opt/soak-publish.py {run} {TASKS} {MAX_BACKLOG} {REPORT}")
    print(f"soak {run}: {TASKS:,} tasks, at most {MAX_BACKLOG:,} queued, a row every {REPORT:,} done", flush=True)
    print("| tasks done | tasks/s | worker child RSS MB | broker RSS MB | store MB | logs: largest file MB (all files) |")
    print("|---|---|---|---|---|---|")
    print(row(0, 0, sample()), flush=True)
    publisher = subprocess.Popen(["docker", "exec", WEB, "sh", "-c", command], stdout=subprocess.PIPE, text=True)
    started = last_time = time.monotonic()
    last_done, next_report, done = 0, REPORT, 0
    stalled_since, previous = time.monotonic(), -1
    while done < TASKS:
        time.sleep(5)
        done = int(sql(f"SELECT count(*) FROM analysis_sleeprun WHERE token LIKE '{pattern}' AND finished_at IS NOT NULL"))
        if done != previous:
            stalled_since, previous = time.monotonic(), done
        elif time.monotonic() - stalled_since > 300:
            publisher.kill()
            raise SystemExit(f"no task finished for 5 minutes at {done:,} of {TASKS:,}")
        if publisher.poll() not in (None, 0):
            raise SystemExit(f"the publisher failed (exit {publisher.returncode})")
        while done >= next_report:
            now = time.monotonic()
            print(row(next_report, (done - last_done) / (now - last_time), sample()), flush=True)
            last_done, last_time, next_report = done, now, next_report + REPORT
    published = json.loads(publisher.communicate(timeout=600)[0].strip().splitlines()[-1])
    seconds = time.monotonic() - started
    time.sleep(5)  # a redelivered copy still in flight
    recorded = int(sql(f"SELECT count(*) FROM analysis_sleeprun WHERE token LIKE '{pattern}'"))
    again = sum(int(sh(w, f"zgrep -h 'sleep soak-{run}-' /var/log/celery/*.log* 2>/dev/null | grep -c 'already finished'",
                       check=False).strip() or 0) for w in WORKERS)
    print()
    print(f"published {published['published']:,} in {published['seconds']:.0f} s (waited {published['waited_for_backlog_s']:.0f} s "
          f"for the backlog to shrink); all done in {seconds:.0f} s, {TASKS / seconds:.0f} tasks/s")
    print(f"recorded once each: {recorded:,}; lost: {published['published'] - recorded:,}; "
          f"delivered again (late acks): {again:,}")
    sql(f"DELETE FROM analysis_sleeprun WHERE token LIKE '{pattern}'")
    sys.exit(0 if recorded == published["published"] else 1)


if __name__ == "__main__":
    main()
