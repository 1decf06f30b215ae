"""A new environment in one command: playbooks/new-environment.yml scaffolds an inventory from templates/ that
passes every tier's input checks, with a vault of fresh secrets only its password opens."""

import json
import subprocess
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
HOSTS = {"broker": ["mq1.qa"], "database": ["db1.qa"], "web": ["web1.qa", "web2.qa"],
         "workers": ["worker1.qa", "worker2.qa"], "beat": ["worker1.qa"], "monitoring": ["mon1.qa"]}


def ansible(*args, check=True):
    run = subprocess.run(list(args), cwd=PROJECT, capture_output=True, text=True, timeout=600)
    if check:
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return run


def scaffold(base, password_file, name="qa"):
    return ansible("ansible-playbook", "playbooks/new-environment.yml", "-e", f"new_environment={name}",
                   "-e", f"new_environment_base_dir={base}", "-e", f"new_environment_vault_password_file={password_file}",
                   "-e", json.dumps({"new_environment_hosts": HOSTS}), check=False)


def vault(path, password_file):
    return yaml.safe_load(ansible("ansible-vault", "view", "--vault-password-file", str(password_file), str(path)).stdout)


def test_a_scaffolded_environment_passes_every_input_check(tmp_path):
    password_file = tmp_path / "vault-password"
    password_file.write_text("a-new-vault-password\n")
    run = scaffold(tmp_path, password_file)
    assert run.returncode == 0, run.stdout[-3000:]
    environment = tmp_path / "qa"
    inventory = yaml.safe_load((environment / "hosts.yml").read_text())
    assert {tier: sorted(group["hosts"]) for tier, group in inventory["all"]["children"].items()} == \
        {tier: sorted(hosts) for tier, hosts in HOSTS.items()}
    secrets = vault(environment / "group_vars/all/vault.yml", password_file)
    assert sorted(secrets) == ["vault_django_secret_key", "vault_flower_web_password", "vault_postgresql_app_password",
                               "vault_rabbitmq_app_password", "vault_rabbitmq_erlang_cookie", "vault_rabbitmq_ops_password"]
    for secret in secrets.values():
        assert secret not in run.stdout, "a generated secret shows in the playbook's output"
    assert (environment / "group_vars/all/vault.yml").read_text().startswith("$ANSIBLE_VAULT;1.2;AES256;qa")
    checks = ansible("ansible-playbook", "-i", str(environment), "playbooks/preflight.yml", "--vault-password-file",
                     str(password_file), "--skip-tags", "host_checks", "-e", "ansible_connection=local",
                     "-e", "ansible_become=false")
    for role in ["rabbitmq", "postgresql", "django", "gunicorn", "nginx", "celery_worker", "celery_beat", "node_exporter",
                 "alertmanager", "prometheus", "flower"]:
        assert f"{role} : Remember that the inputs of {role} were checked on this host" in checks.stdout, role


def test_each_environment_gets_its_own_secrets_and_none_is_overwritten(tmp_path):
    password_file = tmp_path / "vault-password"
    password_file.write_text("a-new-vault-password\n")
    assert scaffold(tmp_path, password_file, "one").returncode == 0
    assert scaffold(tmp_path, password_file, "two").returncode == 0
    one = vault(tmp_path / "one/group_vars/all/vault.yml", password_file)
    two = vault(tmp_path / "two/group_vars/all/vault.yml", password_file)
    assert all(one[key] != two[key] for key in one)
    before = (tmp_path / "one/group_vars/all/vault.yml").read_text()
    again = scaffold(tmp_path, password_file, "one")
    assert again.returncode != 0 and "never overwrites an inventory" in again.stdout + again.stderr
    assert (tmp_path / "one/group_vars/all/vault.yml").read_text() == before
