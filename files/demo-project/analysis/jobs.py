"""Recording jobs and handing them to the broker without letting a request hang.

A publish can stall: with the broker down kombu retries connecting, and when
RabbitMQ raises a resource alarm it blocks publishing connections, so the
publisher confirm never arrives. The publish therefore runs in a daemon thread
that the caller waits for at most DEMO_PUBLISH_TIMEOUT_SECONDS. The job rows
are committed first, so a publish that fails or times out loses nothing:
Job.queued stays False and `manage.py requeue_jobs` sends it again later.
"""

import logging
import random
import threading

from django.conf import settings
from django.db import connection, transaction

from workbench.celery import app

from . import tasks
from .models import Job, WorkItem
from .tasks import finish_job_if_complete

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
UNQUEUED_MESSAGE = "broker unavailable or blocked (resource alarm); the job was recorded but not queued"

# Publishes stuck on a blocked broker keep their thread (and a pooled broker
# connection) until the broker answers. Cap them per process, below Celery's
# default broker pool limit of 10, so a long alarm fails requests fast instead
# of piling up threads.
_IN_FLIGHT = threading.BoundedSemaphore(4)

# The task each item's message names. A release that renames it (a new task)
# must reach the workers before the web hosts publish it: deploy.yml rolls
# the workers first.
ITEM_TASK = tasks.analyse_item


class PublishError(Exception):
    pass


def _publish(job_id, item_ids, timeout):
    # One message per item over one pooled connection, not a group: a group
    # subscribes to its results, and with the rpc:// backend each publishing
    # thread would open a connection and a reply queue named after its thread.
    # Thread ids are reused, so two threads could share a reply queue, and
    # when the first one's connection closed the queue went away under the
    # second (404 NOT_FOUND on Basic.consume: the job not queued).
    with app.producer_or_acquire() as producer:
        for item_id in item_ids:
            ITEM_TASK.apply_async(
                (item_id,),
                producer=producer,
                ignore_result=True,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 1, "interval_max": 1},
                # Socket write and publisher-confirm waits, per message.
                timeout=timeout,
                confirm_timeout=timeout,
            )
    Job.objects.filter(pk=job_id).update(queued=True)
    log.info("job %s: %s item message(s) sent", job_id, len(item_ids))
    if not item_ids:
        finish_job_if_complete(job_id)


def publish_job(job, timeout=None):
    """Send one analyse_item message per unfinished item of job.

    Raises PublishError when the broker has not accepted them all within
    timeout seconds. A publish that completes after the timeout still marks
    the job queued.
    """
    timeout = settings.DEMO_PUBLISH_TIMEOUT_SECONDS if timeout is None else timeout
    item_ids = list(job.items.exclude(status=WorkItem.DONE).values_list("pk", flat=True))
    if app.conf.task_always_eager:
        # The tasks run right here, in this process: no broker to wait for.
        _publish(job.pk, item_ids, timeout)
        return

    if not _IN_FLIGHT.acquire(blocking=False):
        raise PublishError(f"{UNQUEUED_MESSAGE} (earlier publishes are still waiting for the broker)")
    outcome = {}
    finished = threading.Event()

    def run():
        try:
            _publish(job.pk, item_ids, timeout)
        except Exception as exc:  # handed to the waiting caller
            outcome["error"] = exc
        finally:
            connection.close()  # this thread's own database connection
            _IN_FLIGHT.release()
            finished.set()

    # A daemon thread, not a ThreadPoolExecutor: the executor joins its threads
    # at interpreter exit, so a hung publish would also hang worker shutdown.
    threading.Thread(target=run, name=f"publish-job-{job.pk}", daemon=True).start()
    if not finished.wait(timeout):
        raise PublishError(f"{UNQUEUED_MESSAGE} (no answer within {timeout}s)")
    if "error" in outcome:
        exc = outcome["error"]
        raise PublishError(f"{UNQUEUED_MESSAGE} ({type(exc).__name__}: {exc})") from exc


def enqueue_job(parts):
    """Record a job of `parts` work items and queue one task per item.

    Call it outside a transaction: the messages are sent once the rows are
    committed (a worker must never look for an item that is not visible yet),
    and the returned job then carries the outcome in `publish_error` (None when
    the broker took every message).
    """
    if not 1 <= parts <= MAX_PARTS:
        raise ValueError(f"parts must be between 1 and {MAX_PARTS}")

    def publish_after_commit():
        try:
            publish_job(job)
            job.queued = True
        except PublishError as exc:
            job.publish_error = str(exc)
            log.warning("job %s not queued: %s", job.pk, exc)

    with transaction.atomic():
        job = Job.objects.create(parts=parts)
        job.publish_error = None
        WorkItem.objects.bulk_create(
            WorkItem(job=job, index=index, payload=random.randrange(10**9)) for index in range(parts)
        )
        transaction.on_commit(publish_after_commit)
    return job
