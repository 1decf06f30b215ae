"""A real AMQP client for the tests: publish with confirms, read back, detect blocking.

Imported by testinfra tests; also a command line for prepare playbooks:
    amqp.py publish HOST USER PASSWORD VHOST QUEUE BODY
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


def publish_until_blocked(host, user, password, vhost, queue, body_size, limit, pause=0.0, blocked_timeout=10):
    """Publish persistent messages of body_size bytes with confirms, `pause`
    seconds apart, until the broker blocks the connection (for blocked_timeout
    seconds) or `limit` messages were confirmed. Returns (confirmed, blocked).
    A message the broker refuses (nack) raises pika.exceptions.NackError."""
    body = b"b" * body_size
    confirmed = 0
    conn = connect(host, user, password, vhost, blocked_timeout=blocked_timeout, name="bundle-tests-backlog")
    try:
        channel = conn.channel()
        channel.queue_declare(queue=queue, durable=True)
        channel.confirm_delivery()
        while confirmed < limit:
            channel.basic_publish(exchange="", routing_key=queue, body=body,
                                  properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))
            confirmed += 1
            time.sleep(pause)
    except pika.exceptions.ConnectionBlockedTimeout:
        return confirmed, True
    finally:
        if conn.is_open:
            conn.close()
    return confirmed, False


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
