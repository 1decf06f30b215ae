from django.contrib import admin

from .models import Heartbeat, Job, SleepRun, WorkItem


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "parts", "queued", "created_at", "finished_at")
    list_filter = ("queued",)


@admin.register(WorkItem)
class WorkItemAdmin(admin.ModelAdmin):
    list_display = ("id", "job", "index", "status", "processed_by", "attempts", "updated_at")
    list_filter = ("status", "processed_by")
    raw_id_fields = ("job",)


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ("id", "sent_at", "hostname")


@admin.register(SleepRun)
class SleepRunAdmin(admin.ModelAdmin):
    list_display = ("token", "started_at", "finished_at", "hostname")
