"""Runs inside a deployed host, with the application's Python and environment
(bench.py starts it through the app's venv as the app's user), and prints one
JSON object. Measures only; every figure's meaning is in docs/BENCHMARKS.md.

  probe.py celery-publish N          N no-op tasks through the app's Celery configuration
  probe.py raw-publish N QUEUE       N persistent messages with publisher confirms, no Celery
  probe.py raw-consume QUEUE PREFETCH  consume and ack until the queue stays empty (the ceiling)
  probe.py fair-consume QUEUE PREFETCH  the same with a worker's duties: decode, log a line, then ack (late)
  probe.py events-consume SECONDS    read the workers' events as Flower does, for SECONDS; how many
  probe.py celery-control ACTION [QUEUE]  enable_events, disable_events, add_consumer or cancel_consumer
  probe.py watch-drain QUEUE N       when a queue of N messages started to drain and was empty
  probe.py memory DEBUG MTPC WARMUP TASKS BATCH QUERIES  a worker's resident memory over TASKS tasks
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import amqp
from kombu.utils.url import url_to_parts

# A Celery message of a no-op task is about this large (body and headers).
RAW_BODY = b'[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]' + b" " * 300


def broker_connection(**options):
    scheme, host, port, user, password, vhost, _ = url_to_parts(os.environ["CELERY_BROKER_URL"])
    connection = amqp.Connection(host=f"{host}:{port or 5672}", userid=user, password=password,
                                 virtual_host=vhost or "/", **options)
    connection.connect()
    return connection


def declare(channel, queue, passive=False):
    # Classic, durable: what Celery declares for its default queue.
    return channel.queue_declare(queue, passive=passive, durable=True, auto_delete=False)


def celery_publish(n):
    import django

    django.setup()
    from analysis.tasks import noop

    noop.apply_async(ignore_result=True)  # the first call opens the connection: not timed
    started = time.monotonic()
    for _ in range(n):
        noop.apply_async(ignore_result=True)
    return {"messages": n, "seconds": time.monotonic() - started}


def raw_publish(n, queue):
    connection = broker_connection(confirm_publish=True)
    channel = connection.channel()
    declare(channel, queue)
    started = time.monotonic()
    for number in range(n):
        # Like Celery's producer: persistent, protocol 2's headers, and wait for the broker's confirm.
        headers = {"lang": "py", "task": "analysis.tasks.noop", "id": f"bench-{number}", "retries": 0}
        channel.basic_publish(amqp.Message(RAW_BODY, delivery_mode=2, content_type="application/json",
                                           content_encoding="utf-8", application_headers=headers),
                              exchange="", routing_key=queue)
    seconds = time.monotonic() - started
    connection.close()
    return {"messages": n, "seconds": seconds}


def consume(queue, prefetch, handle=None, idle_seconds=3.0):
    """Consume and ack until the queue stays empty; handle(message) runs before each ack when given."""
    connection = broker_connection()
    channel = connection.channel()
    declare(channel, queue)
    channel.basic_qos(0, prefetch, False)
    seen = {"count": 0, "first": None, "last": None}

    def on_message(message):
        if handle:
            handle(message)
        channel.basic_ack(message.delivery_tag)
        now = time.time()
        seen["first"] = seen["first"] or now
        seen["last"] = now
        seen["count"] += 1

    channel.basic_consume(queue, callback=on_message)
    while True:
        try:
            connection.drain_events(timeout=idle_seconds)
        except TimeoutError:
            if seen["count"]:
                break
    connection.close()
    return seen


def raw_consume(queue, prefetch):
    return consume(queue, prefetch)


def fair_consume(queue, prefetch):
    """What a worker does for a no-op task, without Celery: decode the message, log a line like Celery's,
    acknowledge only after (late ack, so a crash redelivers), with the same prefetch."""
    log_file = f"/tmp/bench-fair-{os.getpid()}.log"
    logging.basicConfig(filename=log_file, level=logging.INFO,
                        format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
    log = logging.getLogger("bench.fair")

    def handle(message):
        started = time.monotonic()
        args, kwargs, embed = json.loads(message.body)
        headers = message.headers
        log.info("Task %s[%s] succeeded in %.6fs: None", headers["task"], headers["id"], time.monotonic() - started)

    seen = consume(queue, prefetch, handle)
    os.unlink(log_file)
    return seen


def events_consume(seconds):
    """Flower's receiver: an auto-deleted queue bound to every event, read without acknowledgements."""
    connection = broker_connection()
    channel = connection.channel()
    channel.exchange_declare("celeryev", "topic", durable=True, auto_delete=False)  # as Celery declares it
    queue, _, _ = channel.queue_declare(f"bench.events.{os.getpid()}", exclusive=True, auto_delete=True)
    channel.queue_bind(queue, "celeryev", "#")
    seen = {"events": 0}
    channel.basic_consume(queue, callback=lambda message: seen.update(events=seen["events"] + 1), no_ack=True)
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            connection.drain_events(timeout=1)
        except TimeoutError:
            pass
    connection.close()
    return seen


def celery_control(action, queue=None):
    import django

    django.setup()
    from celery import current_app

    control = current_app.control
    replies = getattr(control, action)(*([queue] if queue else []), reply=True, timeout=5)
    if not replies:
        raise SystemExit(f"no worker answered {action}")
    return {"action": action, "workers": len(replies)}


def watch_drain(queue, n, timeout=600):
    """Polls the queue's depth every 10 ms: time of the first message taken, time it is empty."""
    connection = broker_connection()
    channel = connection.channel()
    started = first = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        depth = declare(channel, queue, passive=True).message_count
        now = time.time()
        started = started or now
        if first is None and depth < n:
            first = now
        if depth == 0:
            connection.close()
            return {"messages": n, "first": first, "empty": now}
        time.sleep(0.01)
    raise SystemExit(f"{queue} still holds {depth} messages after {timeout} s")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return found


def memory(debug, max_tasks_per_child, warmup, tasks, batch, queries):
    """A worker of one process consuming a private queue; its child's resident
    memory after every batch of query_db tasks (each runs QUERIES queries),
    counted after WARMUP tasks (past the first recycling, if any)."""
    import django

    queue = f"bench.memory.{os.getpid()}"
    env = dict(os.environ, DJANGO_DEBUG="true" if debug == "on" else "false")
    command = [os.path.join(sys.prefix, "bin", "celery"), "--app=workbench", "worker", "--pool=prefork",
               "--concurrency=1", f"--queues={queue}", "--loglevel=warning", f"--hostname=memory{os.getpid()}@%h"]
    if int(max_tasks_per_child):
        command.append(f"--max-tasks-per-child={max_tasks_per_child}")
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        django.setup()
        from analysis.tasks import query_db

        connection = broker_connection()
        channel = connection.channel()
        declare(channel, queue)

        def run(count):
            for _ in range(count):
                query_db.apply_async(args=[queries], queue=queue, ignore_result=True)
            deadline = time.monotonic() + 600
            while declare(channel, queue, passive=True).message_count and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # the last task, already taken, finishes

        def sample():
            kids = children(worker.pid)
            return max(rss_kb(kid) for kid in kids) if kids else None

        run(warmup)  # imports, the first connection, caches, the first fresh child
        samples = [(0, sample())]
        for done in range(batch, tasks + 1, batch):
            run(batch)
            samples.append((done, sample()))
        channel.queue_delete(queue)
        connection.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    points = [(x, y) for x, y in samples if y is not None]
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    return {"debug": debug, "max_tasks_per_child": int(max_tasks_per_child), "tasks": tasks,
            "samples": samples, "growth_kb_per_1000": round(slope * 1000, 1),
            "max_rss_kb": max(y for _, y in points)}


COMMANDS = {
    "celery-publish": lambda n: celery_publish(int(n)),
    "raw-publish": lambda n, queue: raw_publish(int(n), queue),
    "raw-consume": lambda queue, prefetch: raw_consume(queue, int(prefetch)),
    "fair-consume": lambda queue, prefetch: fair_consume(queue, int(prefetch)),
    "events-consume": events_consume,
    "celery-control": celery_control,
    "watch-drain": lambda queue, n: watch_drain(queue, int(n)),
    "memory": lambda debug, mtpc, warmup, tasks, batch, queries: memory(
        debug, mtpc, int(warmup), int(tasks), int(batch), int(queries)),
}

if __name__ == "__main__":
    print(json.dumps(COMMANDS[sys.argv[1]](*sys.argv[2:])))
