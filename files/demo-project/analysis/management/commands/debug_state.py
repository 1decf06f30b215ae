import json

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print whether DEBUG is on, as JSON, for the deployment to check."

    def handle(self, *args, **options):
        self.stdout.write(json.dumps({"debug": settings.DEBUG, "settings_module": settings.SETTINGS_MODULE}))
