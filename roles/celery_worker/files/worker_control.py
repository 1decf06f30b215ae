"""Stop or restart the consuming of this host's worker pools, through Celery's remote control.

    worker_control.py APP pause POOL=QUEUE[,QUEUE] ... [--timeout SECONDS]
    worker_control.py APP resume POOL=QUEUE[,QUEUE] ...
    worker_control.py APP requeue-dead-letters POOL=QUEUE[,QUEUE] ... [--queue QUEUE]
    worker_control.py APP settings POOL=QUEUE[,QUEUE] ...

pause cancels each pool's consumers on this host, so the broker keeps new messages in their queues,
then waits until the pool has no task running or reserved: afterwards nothing on this host touches the
database or the broker on behalf of a task. resume makes the pools consume their queues again.
requeue-dead-letters moves what the broker dead-lettered (a task no worker knew, a message that could not be
decoded) from each queue's <queue>.dead-letter back to where it was first published (with publisher
confirms when the project's Celery app asks for them), once the cause is fixed. Run with
the project's environment (settings, broker URL) by the role's wrapper, as the project's user.
settings prints, as JSON, the reliability settings the project's Celery app really ends up with in this
environment (a project that does not read them from the environment ignores what the role writes).
"""

import argparse
import json
import socket
import sys
import time

from celery.app.utils import find_app
from kombu import Producer


def nodes_and_queues(specs):
    hostname = socket.gethostname()
    pools = {}
    for spec in specs:
        pool, _, queues = spec.partition("=")
        pools[f"{pool}@{hostname}"] = [queue for queue in queues.split(",") if queue]
    return pools


def busy(app, nodes):
    """Tasks running or reserved on the nodes; None when a node does not answer."""
    inspect = app.control.inspect(destination=nodes, timeout=5)
    active, reserved = inspect.active() or {}, inspect.reserved() or {}
    if set(nodes) - set(active) or set(nodes) - set(reserved):
        return None
    return sum(len(active[node]) + len(reserved[node]) for node in nodes)


DEAD_LETTER_SUFFIX = ".dead-letter"


def requeue_dead_letters(app, queue):
    """Send every message of <queue>.dead-letter back to the exchange and routing key it was first
    published with (its x-death header says), confirmed before it leaves the dead-letter queue."""
    moved = 0
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        producer = Producer(channel)
        while True:
            raw = channel.basic_get(queue=queue + DEAD_LETTER_SUFFIX, no_ack=False)
            if raw is None:
                return moved
            message = channel.message_to_python(raw)
            deaths = (message.headers or {}).get("x-death") or [{}]
            origin = deaths[-1]
            producer.publish(
                message.body,
                exchange=origin.get("exchange", ""),
                routing_key=(origin.get("routing-keys") or [queue])[0],
                headers=message.headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                retry=True,
            )
            message.ack()
            moved += 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("app")
    parser.add_argument("action", choices=["pause", "resume", "requeue-dead-letters", "settings"])
    parser.add_argument("pools", nargs="+", metavar="POOL=QUEUES")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--queue", action="append", help="only these queues (requeue-dead-letters)")
    parser.add_argument("--setting", action="append", default=[], help="a setting to print (settings)")
    args = parser.parse_args()
    app = find_app(args.app)
    if args.action == "settings":
        print(json.dumps({name: app.conf.get(name) for name in args.setting}))
        return
    pools = nodes_and_queues(args.pools)
    if args.action == "requeue-dead-letters":
        queues = args.queue or sorted({queue for queues in pools.values() for queue in queues})
        for queue in queues:
            print(f"{queue}{DEAD_LETTER_SUFFIX}: {requeue_dead_letters(app, queue)} message(s) sent back")
        return
    nodes = list(pools)
    for node, queues in pools.items():
        for queue in queues:
            call = app.control.cancel_consumer if args.action == "pause" else app.control.add_consumer
            replies = call(queue, destination=[node], reply=True, timeout=5)
            if not replies:
                sys.exit(f"{node} did not answer the request to {args.action} {queue}: is the pool running?")
            print(f"{node}: {args.action} {queue}: {replies}")
    if args.action == "resume":
        return
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        left = busy(app, nodes)
        if left == 0:
            print(f"{', '.join(nodes)}: no task running or reserved")
            return
        time.sleep(1)
    sys.exit(f"{', '.join(nodes)} still run tasks after {args.timeout:.0f} s; their consumers stay cancelled")


if __name__ == "__main__":
    main()
