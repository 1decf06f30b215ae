from django.core.management.base import BaseCommand, CommandError

from analysis.jobs import PublishError, publish_job
from analysis.models import Job


class Command(BaseCommand):
    help = (
        "Send the unfinished items of jobs the broker never accepted (queued=False) "
        "again. Safe to repeat: the tasks are re-entrant."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--all", action="store_true",
            help="also resend unfinished jobs that were queued (e.g. after a broker lost its queues)",
        )
        parser.add_argument("--timeout", type=float, default=None,
                            help="seconds to wait for the broker per job (default DEMO_PUBLISH_TIMEOUT_SECONDS)")

    def handle(self, *args, **options):
        jobs = Job.objects.filter(finished_at__isnull=True).order_by("pk")
        if not options["all"]:
            jobs = jobs.filter(queued=False)
        failed = 0
        for job in jobs:
            try:
                publish_job(job, timeout=options["timeout"])
            except PublishError as exc:
                failed += 1
                self.stderr.write(f"job {job.pk}: {exc}")
            else:
                self.stdout.write(f"job {job.pk}: requeued")
        if failed:
            raise CommandError(f"{failed} job(s) could not be queued")
