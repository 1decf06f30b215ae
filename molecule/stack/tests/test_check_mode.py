"""Check mode and partial runs on the converged stack: --check --diff changes nothing, shows no secret and
reports exactly a changed setting; --tags config runs every role's configuration, shared pieces included."""

from bundletest.common import changed_tasks, playbook, recap
from stack import SECRETS


def test_a_configuration_run_in_check_mode_changes_nothing_and_runs_every_shared_piece():
    """One run for both: --check --diff must report nothing to change on the converged stack (and show no
    secret), and --tags config must reach the tasks the roles include from common (hardening, log rotation,
    the restart of stale units), which an include without apply: tags silently skipped."""
    # Every tier's host once: the second worker would repeat the first, and the monitoring host's roles have
    # no unit of the project (molecule's idempotence step re-runs the whole site on every host).
    run = playbook("playbooks/site.yml", "--check", "--diff", "--tags", "config",
                   "--limit", "stack-broker,stack-db,stack-web,stack-worker1", secrets=SECRETS)
    changed = {name: counts["changed"] for name, counts in recap(run).items()}
    assert changed and set(changed.values()) == {0}, changed_tasks(run)
    for unit in ["rabbitmq-server.service", "postgresql@.service", "gunicorn.service", "nginx.service",
                 "celery-worker@.service", "celery-beat.service"]:
        assert f"common : Confine {unit}" in run.stdout, f"--tags config skipped the hardening of {unit}"
    for rules in ["rabbitmq-server", "gunicorn", "nginx", "celery-worker", "celery-beat"]:
        assert f"common : Write the rotation rules for {rules}" in run.stdout, f"--tags config skipped {rules}'s log rotation"
    assert run.stdout.count("common : Find the units that run an old release or old settings") >= 5


def test_check_mode_runs_the_release_checks_and_reports_exactly_a_changed_setting():
    """The whole web tier in check mode, deploy steps included: the release's checks (check --deploy, the
    DEBUG and publisher probe) run against the live release, and the one changed setting is the one change
    reported. The publisher check at its default level warns about a retry window shorter than asked."""
    run = playbook("playbooks/web.yml", "--check", "--diff", "-e", "gunicorn_timeout_seconds=31",
                   "-e", "django_publisher_retry_seconds=3600", secrets=SECRETS)
    assert changed_tasks(run) == [("stack-web", "gunicorn : Install the service unit")], changed_tasks(run)
    assert "+  --timeout 31 --graceful-timeout" in run.stdout
    assert "django : Refuse a release that runs with DEBUG on" in run.stdout
    assert ("can lose tasks it publishes: task_publish_retry_policy retries for 17.0 s, less than"
            " django_publisher_retry_seconds (3600 s" in run.stdout), run.stdout[-3000:]


def test_a_release_that_publishes_with_too_short_a_retry_is_refused_at_the_fail_level():
    """The demo retries a publish for 17 s; asked for an hour at django_publisher_check: fail, the release is
    refused before the switch, with the setting named, and nothing changes."""
    run = playbook("playbooks/web.yml", "--check", "-e", "django_publisher_check=fail",
                   "-e", "django_publisher_retry_seconds=3600", secrets=SECRETS, check=False)
    assert run.returncode != 0, run.stdout[-3000:]
    assert "task_publish_retry_policy retries for 17.0 s" in run.stdout and "The live release was not changed" in run.stdout
    assert all(counts["changed"] == 0 for counts in recap(run).values()), changed_tasks(run)
