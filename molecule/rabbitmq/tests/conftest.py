"""The broker under test: its inventory variables, its address, and the application user's credentials."""

import pytest


@pytest.fixture(scope="module")
def cfg(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def address(host):
    return host.interface("eth0").addresses[0]


@pytest.fixture(scope="module")
def app(cfg, address):
    """(host, user, password, vhost) of the application user."""
    user = next(u for u in cfg["rabbitmq_users"] if u["name"] == "app")
    return address, user["name"], user["password"], user["permissions"][0]["vhost"]
