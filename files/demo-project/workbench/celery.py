import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")

app = Celery("workbench")
# Every CELERY_* Django setting (and so every CELERY_* environment variable,
# see settings.py) configures Celery.
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
