import pytest


@pytest.fixture(autouse=True)
def once(host):
    """The stack's tests are about the system, not a host: they run once, from the web host's point of view."""
    if host.backend.host != "stack-web":
        pytest.skip("system tests run once")
