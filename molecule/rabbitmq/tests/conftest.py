"""The broker under test: its inventory variables, its address, and the application user's credentials.
The two brokers share nothing, so their tests run side by side."""

import pytest
from bundletest.hosts_side_by_side import pytest_xdist_make_scheduler  # noqa: F401 (a hook)


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
