"""Check mode and partial runs on the converged stack: --check --diff changes nothing, shows no secret and
reports exactly a changed setting; --tags config runs every role's configuration, shared pieces included."""

from bundletest.common import changed_tasks, playbook, recap
from stack import SECRETS


def test_check_mode_on_the_converged_stack_passes_with_nothing_to_change():
    run = playbook("playbooks/site.yml", "--check", "--diff", secrets=SECRETS)
    changed = {name: counts["changed"] for name, counts in recap(run).items()}
    assert changed and set(changed.values()) == {0}, changed_tasks(run)


def test_check_mode_reports_exactly_a_changed_setting():
    run = playbook("playbooks/web.yml", "--check", "--diff", "-e", "gunicorn_timeout_seconds=31", secrets=SECRETS)
    assert changed_tasks(run) == [("stack-web", "gunicorn : Install the service unit")], changed_tasks(run)
    assert "+  --timeout 31 --graceful-timeout" in run.stdout


def test_tags_config_applies_every_role_with_its_shared_pieces():
    run = playbook("playbooks/site.yml", "--tags", "config", secrets=SECRETS)
    assert set(counts["changed"] for counts in recap(run).values()) == {0}, changed_tasks(run)
    for unit in ["rabbitmq-server.service", "postgresql@.service", "gunicorn.service", "nginx.service",
                 "celery-worker@.service", "celery-beat.service"]:
        assert f"common : Confine {unit}" in run.stdout, f"--tags config skipped the hardening of {unit}"
    for rules in ["rabbitmq-server", "gunicorn", "nginx", "celery-worker", "celery-beat"]:
        assert f"common : Write the rotation rules for {rules}" in run.stdout, f"--tags config skipped {rules}'s log rotation"
    for unit in ["gunicorn.service", "celery-worker@default.service", "celery-beat.service"]:
        assert "common : Find the units that run an old release or old settings" in run.stdout, unit
