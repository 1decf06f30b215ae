from django.db import models


class Job(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    parts = models.PositiveIntegerField()
    # False until the broker has accepted every message of the job; a job
    # left False (broker down or blocked) is picked up by `requeue_jobs`.
    queued = models.BooleanField(default=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"job {self.pk} ({self.parts} parts)"


class WorkItem(models.Model):
    PENDING = "pending"
    DONE = "done"
    # Terminal, like done: the task gave up after its retries, and says why.
    FAILED = "failed"
    STATUS_CHOICES = [(PENDING, "pending"), (DONE, "done"), (FAILED, "failed")]

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveIntegerField()
    payload = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=PENDING)
    result = models.CharField(max_length=64, blank=True)
    processed_by = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="workitem_job_index_unique"),
        ]
        indexes = [models.Index(fields=["job", "status"])]

    def __str__(self):
        return f"item {self.job_id}/{self.index}"


class Heartbeat(models.Model):
    sent_at = models.DateTimeField(auto_now_add=True, db_index=True)
    hostname = models.CharField(max_length=255)


class SleepRun(models.Model):
    token = models.CharField(max_length=255, unique=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    hostname = models.CharField(max_length=255, blank=True)
