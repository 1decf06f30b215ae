"""A real AMQP client for the tests: publish with confirms, read back, detect blocking.

Imported by testinfra tests; also a command line for prepare playbooks:
    amqp_probe.py publish HOST USER PASSWORD VHOST QUEUE BODY
"""

import sys
import time

import pika
import pika.exceptions


def connect(host, user, password, vhost, blocked_timeout=None, name="bundle-tests"):
    params = pika.ConnectionParameters(
        host=host,
        virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password),
        blocked_connection_timeout=blocked_timeout,
        client_properties={"connection_name": name},
        connection_attempts=3,
        retry_delay=1,
    )
    return pika.BlockingConnection(params)


def publish(host, user, password, vhost, queue, bodies):
    """Publish persistent messages to a durable queue; return once the broker confirmed each."""
    with connect(host, user, password, vhost) as conn:
        channel = conn.channel()
        channel.queue_declare(queue=queue, durable=True)
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=body.encode(),
                properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
                mandatory=True,
            )


def read_all(host, user, password, vhost, queue, requeue=True):
    """Every message body in the queue, in order; left in the queue unless requeue is False."""
    bodies = []
    with connect(host, user, password, vhost) as conn:
        channel = conn.channel()
        channel.queue_declare(queue=queue, durable=True, passive=True)
        while True:
            method, _props, body = channel.basic_get(queue=queue, auto_ack=False)
            if method is None:
                break
            bodies.append(body.decode())
        if not requeue and bodies:
            channel.basic_ack(delivery_tag=0, multiple=True)
        # Unacknowledged messages go back to the queue when the connection closes.
    return bodies


def try_publish_while_blocked(host, user, password, vhost, queue, timeout=5):
    """Try to publish one message with confirms; report whether the broker blocked the connection.

    Returns (blocked_notified, confirmed, seconds).
    """
    notified = []
    started = time.monotonic()
    conn = connect(host, user, password, vhost, blocked_timeout=timeout, name="bundle-tests-blocked")
    conn.add_on_connection_blocked_callback(lambda *_: notified.append(time.monotonic()))
    confirmed = False
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            body=b"published-during-alarm",
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
        confirmed = True
    except pika.exceptions.ConnectionBlockedTimeout:
        # pika raises this only after the broker sent Connection.Blocked and
        # kept the connection blocked for `timeout` seconds.
        notified.append(time.monotonic())
    finally:
        if conn.is_open:
            conn.close()
    return bool(notified), confirmed, time.monotonic() - started


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "publish":
        host, user, password, vhost, queue, body = args
        publish(host, user, password, vhost, queue, [body])
    else:
        sys.exit(f"unknown command {command!r}")
