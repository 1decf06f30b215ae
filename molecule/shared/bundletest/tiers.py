"""Tests that belong to one tier run only on that tier's hosts: a scenario's conftest.py makes the fixture."""

import pytest


def tier_of_each_test(default, prefixed=()):
    """An autouse fixture: a test named test_<tier>_... runs on the hosts of <tier> (one of `prefixed`), any
    other test on the hosts of `default`; elsewhere it is skipped."""

    @pytest.fixture(autouse=True)
    def right_tier(request, host):
        tier = next((tier for tier in prefixed if request.node.name.startswith(f"test_{tier}_")), default)
        if tier not in host.ansible.get_variables()["group_names"]:
            pytest.skip(f"a {tier} host test")

    return right_tier
