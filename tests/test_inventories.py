"""The shipped inventories pass every tier's input checks: what ops copy to start an environment must work.

Runs the preflight play the tier playbooks start with, against each inventory and its example vault, on the
controller alone: the checks that read a host (devices, name resolution) are left out, every input check runs.
"""

import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
EXAMPLE_VAULT_PASSWORD = "bundle-example-vault"


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_every_input_check_passes_on_the_shipped_inventory(environment, tmp_path):
    password_file = tmp_path / "vault-password"
    password_file.write_text(EXAMPLE_VAULT_PASSWORD + "\n")
    run = subprocess.run(
        ["ansible-playbook", "-i", f"inventories/{environment}", "playbooks/preflight.yml",
         "--vault-password-file", str(password_file), "--skip-tags", "host_checks",
         "-e", "ansible_connection=local", "-e", "ansible_become=false"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    # Every host of the inventory was checked, with the roles of its tiers.
    hosts = subprocess.run(["ansible-inventory", "-i", f"inventories/{environment}", "--list", "--vault-password-file",
                            str(password_file)], cwd=PROJECT, capture_output=True, text=True, check=True).stdout
    for role in ["rabbitmq", "postgresql", "django", "gunicorn", "nginx", "celery_worker", "celery_beat", "node_exporter",
                 "alertmanager", "prometheus", "flower"]:
        assert f"{role} : Remember that the inputs of {role} were checked on this host" in output, role
    assert "failed=0" in output and "ok=" in output and hosts
