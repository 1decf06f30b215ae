"""Runs on the web host with the application's Python and environment (soak.py starts it as the app's user):
publishes N small re-entrant tasks through the app's own Celery configuration, never more than MAX_BACKLOG
ahead of the workers (a broker that queues faster than it drains fills its disk), and prints one JSON line
per REPORT tasks published and one at the end.

  publish.py RUN N MAX_BACKLOG REPORT
"""

import json
import sys
import time

import django


def main(run, n, max_backlog, report):
    django.setup()
    from analysis import tasks
    from celery import current_app

    started = time.monotonic()
    waited = 0.0
    with current_app.connection_for_write() as connection:
        channel = connection.default_channel
        for number in range(n):
            if number % 1000 == 0:
                # Backpressure: wait while the queue holds more than the allowed backlog.
                while channel.queue_declare("celery", passive=True).message_count > max_backlog:
                    time.sleep(0.5)
                    waited += 0.5
            # sleep_for(token, 0): records the token once in the database, says so again on a redelivery.
            tasks.sleep_for.apply_async((f"soak-{run}-{number}", 0), queue="celery", ignore_result=True)
            if (number + 1) % report == 0:
                print(json.dumps({"published": number + 1, "seconds": time.monotonic() - started,
                                  "waited_for_backlog_s": waited}), flush=True)
    print(json.dumps({"published": n, "seconds": time.monotonic() - started, "waited_for_backlog_s": waited,
                      "done": True}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:5]))
