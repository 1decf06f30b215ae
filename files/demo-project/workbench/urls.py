from django.contrib import admin
from django.urls import path

from analysis import views

urlpatterns = [
    path("health/", views.health, name="health"),
    path("debug-state/", views.debug_state, name="debug-state"),
    path("jobs/", views.create_job, name="job-create"),
    path("jobs/<int:job_id>/", views.job_detail, name="job-detail"),
    path("admin/", admin.site.urls),
]
