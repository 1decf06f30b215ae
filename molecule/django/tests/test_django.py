"""Behaviour of the web tier: nginx, Gunicorn, the Django release, DEBUG off, and the database behind them."""

import json
import subprocess
import threading
import time

import pytest

from bundletest import units
from bundletest.common import APP, PROJECT, http, playbook, wait_for

BASE = f"/srv/{APP}"


def test_health_view_answers_through_nginx_with_the_database_behind_it(host):
    status, headers, body = http(host, "/health/")
    assert status == 200, body
    assert json.loads(body) == {"status": "ok"}
    assert headers["server"] == "nginx"


def test_static_files_come_from_nginx_not_gunicorn(host):
    status, _headers, body = http(host, "/static/analysis/ping.txt")
    assert (status, body) == (200, "pong\n")
    assert "ping.txt" not in host.file("/var/log/gunicorn/access.log").content_string


def test_debug_is_off_in_the_running_application(host):
    status, _headers, body = http(host, "/debug-state/")
    assert json.loads(body) == {"debug": False}
    out = host.check_output(f"{APP}-manage shell --no-startup --command 'from django.conf import settings; print(settings.DEBUG)'")
    assert out.strip().splitlines()[-1] == "False"


def test_a_missing_page_gets_the_plain_404(host):
    status, _headers, body = http(host, "/no-such-page/")
    assert status == 404
    for debug_page_marker in ("URLconf", "DEBUG = True", "Traceback", "settings"):
        assert debug_page_marker not in body


def test_gunicorn_runs_as_the_app_user_behind_a_systemd_socket(host):
    assert host.service("gunicorn.socket").is_enabled
    assert host.service("gunicorn.service").is_running
    users = host.check_output("ps -o user= --ppid $(systemctl show -p MainPID --value gunicorn.service)").split()
    assert users and set(users) == {APP}
    sock = host.file("/run/gunicorn.sock")
    assert sock.is_socket and sock.group == "www-data" and sock.mode == 0o660


def test_the_environment_file_is_private_to_the_app(host):
    env = host.file(f"/etc/{APP}/env")
    assert (env.user, env.group, env.mode) == ("root", APP, 0o640)
    assert "DJANGO_DEBUG='false'" in env.content_string


def test_the_live_release_is_a_complete_versioned_directory(host):
    live = host.file(f"{BASE}/current")
    assert live.is_symlink and live.linked_to.startswith(f"{BASE}/releases/")
    assert host.file(f"{live.linked_to}/.release-complete").exists
    assert host.file(f"{live.linked_to}/venv/bin/gunicorn").exists
    assert host.file(f"{live.linked_to}/.static/analysis/ping.txt").exists
    assert host.file(f"{live.linked_to}").user == "root", "the application must not own its code"


def test_migrations_ran_once_for_both_web_hosts(host):
    applied = host.check_output(f"{APP}-manage showmigrations analysis")
    assert "[X] 0002_cache_table" in applied


def test_a_restart_drops_no_request(host):
    statuses = []
    done = threading.Event()

    def load():
        while not done.is_set():
            try:
                statuses.append(http(host, "/health/")[0])
            except OSError as error:
                statuses.append(repr(error))

    clients = [threading.Thread(target=load) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        # Requests in flight before the restart and answered after it, however slow the host.
        assert wait_for(lambda: len(statuses) >= 10, timeout=60)
        host.check_output("systemctl restart gunicorn.service")
        restarted = len(statuses)
        assert wait_for(lambda: len(statuses) >= restarted + 10, timeout=60)
    finally:
        done.set()
        for client in clients:
            client.join()
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]


def test_logs_rotate_and_gunicorn_keeps_logging(host):
    host.check_output("logrotate --force /etc/logrotate.d/gunicorn")
    assert host.file("/var/log/gunicorn/access.log.1").exists
    http(host, "/health/?after-rotation")
    assert "after-rotation" in host.file("/var/log/gunicorn/access.log").content_string


def test_gunicorn_is_hardened(host):
    settings = host.check_output(
        "systemctl show gunicorn.service --property User,NoNewPrivileges,ProtectSystem,PrivateTmp,CapabilityBoundingSet")
    assert dict(line.split("=", 1) for line in settings.splitlines()) == {
        "User": APP, "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
    }
    assert units.exposure(host, "gunicorn.service") < 5.0


def test_nginx_unit_is_confined(host):
    assert units.exposure(host, "nginx.service") < 5.0
    assert not units.writable(host, "nginx.service", "/etc")
    assert units.writable(host, "nginx.service", "/var/log/nginx")
    # The master binds port 80 and runs workers as www-data; nothing else.
    assert host.check_output("ps -o user= -C nginx | sort -u").split() == ["root", "www-data"]


def test_database_unit_is_confined(host):
    unit = host.check_output("systemctl list-units --plain --no-legend 'postgresql@*' | awk '{print $1}'")
    assert units.exposure(host, unit) < 5.0
    assert not units.writable(host, unit, "/etc")
    assert units.writable(host, unit, "/var/lib/postgresql")
    assert host.check_output(f"ps -o user= -p {units.main_pid(host, unit)}") == "postgres"


def test_debug_on_in_production_is_refused_before_any_change(host):
    before = host.check_output(f"md5sum /etc/{APP}/env")
    run = playbook("playbooks/web.yml", "--limit", host.backend.host, "-e", "django_debug=true", check=False)
    assert run.returncode != 0
    assert "django_debug is true in the production environment" in run.stdout + run.stderr
    assert "changed=0" in run.stdout
    assert host.check_output(f"md5sum /etc/{APP}/env") == before


def test_new_releases_go_live_old_ones_go_and_rollback_returns(host, tmp_path):
    if host.backend.host != "django-web13":
        pytest.skip("one host is enough")
    first = host.file(f"{BASE}/current").linked_to
    live, versions = [], []
    for n in range(2):
        source = tmp_path / f"project{n}"
        subprocess.run(["cp", "-r", str(PROJECT / "files/demo-project"), str(source)], check=True)
        versions.append(f"{time.time_ns()}\n")
        (source / "analysis/static/analysis/version.txt").write_text(versions[-1])
        run = playbook("playbooks/web.yml", "--limit", "django-web13", "-e", f"django_source_path={source}", check=False)
        assert run.returncode == 0, run.stdout[-3000:]
        live.append(host.file(f"{BASE}/current").linked_to)
        assert http(host, "/static/analysis/version.txt")[2] == versions[-1]
    assert len({first, *live}) == 3
    # The scenario keeps 2 releases: the first one is gone.
    assert sorted(host.check_output(f"ls {BASE}/releases").split()) == sorted(path.rsplit("/", 1)[1] for path in live)
    run = playbook("playbooks/web.yml", "--limit", "django-web13", "-e", "django_rollback=true", check=False)
    assert run.returncode == 0, run.stdout[-3000:]
    assert host.file(f"{BASE}/current").linked_to == live[0]
    assert http(host, "/static/analysis/version.txt")[2] == versions[0]
    assert http(host, "/health/")[0] == 200


def test_database_accepts_only_the_application_hosts(host):
    assert host.service("postgresql").is_running
    assert host.socket("tcp://0.0.0.0:5432").is_listening
    own_address = host.interface("eth0").addresses[0]
    refused = host.run(
        f"PGPASSWORD=scenario-db-password PGCONNECT_TIMEOUT=5 psql -h {own_address} -U workbench -d workbench -c 'select 1'"
    )
    assert refused.rc != 0 and "no pg_hba.conf entry" in refused.stderr
    # Both web hosts migrated the one database: each migration is recorded once.
    migrations = len(list((PROJECT / "files/demo-project/analysis/migrations").glob("0*.py")))
    applied = host.check_output("runuser -u postgres -- psql -d workbench -Atc \"select count(*) from django_migrations where app = 'analysis'\"")
    assert applied == str(migrations)
