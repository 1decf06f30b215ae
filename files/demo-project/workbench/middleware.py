"""A database that is briefly away (a restart, a failover) answers 503 with Retry-After, not a 500 page."""

import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class DatabaseUnavailableMiddleware:
    """Turns a lost database connection in a view into 503 Service Unavailable.

    Load balancers and clients retry a 503 after Retry-After; a 500 says the
    request itself is wrong. Other database errors (a constraint, a bad query)
    stay 500s: they are bugs, not outages.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        log.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
        response = JsonResponse({"error": "database unavailable, try again shortly"}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
