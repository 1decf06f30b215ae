from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from workbench.middleware import RETRY_AFTER_SECONDS

from .jobs import MAX_PARTS, enqueue_job
from .models import Job, WorkItem


@require_GET
def health(request):
    # Database only: a broker outage must not take the web tier out of the
    # load balancer; job submission reports it on its own (503 from /jobs/).
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return JsonResponse({"status": "error", "reason": f"database: {exc}"}, status=503)
    return JsonResponse({"status": "ok"})


@require_GET
def debug_state(request):
    """Lets the deployment ask the running code whether DEBUG is on (one bool)."""
    return JsonResponse({"debug": settings.DEBUG})


@csrf_exempt  # an API endpoint for scripts, no session or cookies involved
@require_POST
def create_job(request):
    raw = request.GET.get("parts") or request.POST.get("parts") or "10"
    try:
        parts = int(raw)
    except ValueError:
        parts = 0
    if not 1 <= parts <= MAX_PARTS:
        return JsonResponse({"error": f"parts must be an integer from 1 to {MAX_PARTS}"}, status=400)

    job = enqueue_job(parts)
    body = {"job": job.pk, "parts": parts, "url": f"/jobs/{job.pk}/"}
    if job.publish_error:
        # Recorded but not queued: `requeue_jobs` sends it once the broker is back.
        response = JsonResponse({**body, "error": job.publish_error}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return JsonResponse(body, status=202)


@require_GET
def job_detail(request, job_id):
    job = get_object_or_404(Job, pk=job_id)
    done = job.items.filter(status=WorkItem.DONE)
    failed = job.items.filter(status=WorkItem.FAILED)
    processed_by = dict(
        done.values_list("processed_by").annotate(n=Count("pk")).order_by("processed_by")
    )
    return JsonResponse({
        "job": job.pk,
        "parts": job.parts,
        "queued": job.queued,
        "done": done.count(),
        "failed": failed.count(),
        "errors": sorted(set(failed.values_list("error", flat=True)[:100])),
        "finished": job.finished_at is not None,
        "processed_by": processed_by,
    })
