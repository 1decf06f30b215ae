"""Demo tasks. Each one is re-entrant: running it twice for the same input
(a redelivery after a worker died, a requeue) gives the same end state, which
is what makes acks_late + reject_on_worker_lost safe."""

import hashlib
import logging
import os
import socket
import time
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import F
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from .models import Heartbeat, Job, SleepRun, WorkItem

log = logging.getLogger(__name__)

LOCK_SECONDS = 60
HEARTBEAT_KEEP = timedelta(days=1)

# leak_memory() grows this on purpose, to exercise worker_max_memory_per_child.
_LEAK = []


def _digest(payload):
    return hashlib.sha256(str(payload).encode()).hexdigest()


# A database or broker that is briefly away (a restart, a failover) is not a
# reason to give up on a task: retry with exponential backoff and jitter, a
# bounded number of times. What still fails is recorded on its item (status
# failed, with the error) and shown by its job: never silent.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, BrokerError)
ITEM_TASK_OPTIONS = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 600,
    "ignore_result": True,
}


class ItemTask(Task):
    """Records on its work item a task that gave up, so its job finishes and says why."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        item_id = args[0] if args else kwargs.get("item_id")
        try:
            updated = WorkItem.objects.filter(pk=item_id, status=WorkItem.PENDING).update(
                status=WorkItem.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], updated_at=timezone.now()
            )
            if updated:
                job_id = WorkItem.objects.filter(pk=item_id).values_list("job_id", flat=True).first()
                finish_job_if_complete(job_id)
        except DatabaseError:
            log.exception("task %s item %s failed and could not be recorded", task_id, item_id)
        log.error("task %s item %s failed for good: %r", task_id, item_id, exc)


def finish_job_if_complete(job_id):
    if WorkItem.objects.filter(job_id=job_id, status=WorkItem.PENDING).exists():
        return False
    # The filter makes this idempotent: only the first finisher sets the time.
    if Job.objects.filter(pk=job_id, finished_at__isnull=True).update(finished_at=timezone.now()):
        log.info("job %s finished", job_id)
    return True


@shared_task(bind=True, base=ItemTask, **ITEM_TASK_OPTIONS)
def analyse_item(self, item_id):
    return analyse(self, item_id)


def analyse(task, item_id):
    """The work of one item, whichever task name carried it."""
    host = socket.gethostname()
    # The lock only avoids duplicate work when the same item is delivered
    # twice at once; correctness comes from the conditional update below.
    # DatabaseCache.add() is safe across hosts: the cache key is the primary key.
    lock_key = f"lock:item:{item_id}"
    owner = f"{host}:{os.getpid()}:{task.request.id}"
    if not cache.add(lock_key, owner, timeout=LOCK_SECONDS):
        log.info("task %s item %s busy elsewhere, retrying (host %s)", task.request.id, item_id, host)
        raise task.retry(countdown=1)
    try:
        item = WorkItem.objects.filter(pk=item_id).first()
        if item is None:
            # Deleted with its job; nothing to do, and nothing to retry.
            log.warning("task %s item %s no longer exists (host %s)", task.request.id, item_id, host)
            return None
        if item.status == WorkItem.DONE:
            log.info("task %s item %s already done by %s (host %s)",
                     task.request.id, item_id, item.processed_by, host)
            result = item.result
        else:
            result = _digest(item.payload)
            WorkItem.objects.filter(pk=item_id, status=WorkItem.PENDING).update(
                status=WorkItem.DONE,
                result=result,
                processed_by=host,
                attempts=F("attempts") + 1,
                updated_at=timezone.now(),
            )
            log.info("task %s item %s (job %s #%s) done on %s",
                     task.request.id, item_id, item.job_id, item.index, host)
    finally:
        # Only release our own lock: if we overran LOCK_SECONDS it may be someone else's.
        if cache.get(lock_key) == owner:
            cache.delete(lock_key)
    # Also on the already-done path: a previous run may have died before this.
    finish_job_if_complete(item.job_id)
    return result


@shared_task(ignore_result=True)
def heartbeat():
    host = socket.gethostname()
    Heartbeat.objects.create(hostname=host)
    # Keep the table bounded; a day is plenty to see that beat is alive.
    Heartbeat.objects.filter(sent_at__lt=timezone.now() - HEARTBEAT_KEEP).delete()
    log.info("heartbeat from %s", host)


@shared_task
def noop():
    """Does nothing; for measuring broker/worker throughput."""
    return None


@shared_task(bind=True)
def sleep_for(self, token, seconds):
    """Sleep, recording start and finish, for graceful-stop and redelivery tests."""
    host = socket.gethostname()
    run, created = SleepRun.objects.get_or_create(token=token)
    if run.finished_at:
        log.info("task %s sleep %s already finished on %s", self.request.id, token, run.hostname)
        return run.hostname
    # Who runs it now: the tests stop or kill exactly that worker.
    SleepRun.objects.filter(pk=run.pk).update(hostname=host)
    log.info("task %s sleep %s for %ss on %s (%s)", self.request.id, token, seconds, host,
             "first run" if created else "redelivered")
    time.sleep(float(seconds))
    SleepRun.objects.filter(pk=run.pk, finished_at__isnull=True).update(
        finished_at=timezone.now(), hostname=host
    )
    log.info("task %s sleep %s finished on %s", self.request.id, token, host)
    return host


def _rss_kb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


@shared_task
def leak_memory(kb):
    """Hold kb more kilobytes for the life of the process; returns its RSS in kB."""
    # bytes * n writes every page, so the memory is really resident.
    _LEAK.append(b"x" * (int(kb) * 1024))
    rss = _rss_kb()
    log.info("leak_memory: pid %s holds %s chunks, RSS %s kB", os.getpid(), len(_LEAK), rss)
    return rss


@shared_task
def query_db(n):
    """Run n trivial queries. With DEBUG on, Django keeps every query in
    connection.queries and a long-lived worker only ever grows; with DEBUG off
    the returned count stays 0."""
    for _ in range(int(n)):
        WorkItem.objects.filter(pk=-1).exists()
    return len(connection.queries)


@shared_task(bind=True)
def whoami(self):
    delivery_info = self.request.delivery_info or {}
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "debug": settings.DEBUG,
        "queue": delivery_info.get("routing_key"),
    }
