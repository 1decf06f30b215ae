"""A scenario whose hosts share nothing runs each host's tests on its own pytest-xdist worker, in file order,
and the hosts side by side (`-n <hosts>`): a test may restart or re-converge its host, so one host's tests never
overlap, but another host's wait for nothing. A scenario's conftest.py imports the hook."""

from xdist.scheduler import LoadScopeScheduling


class OneHostPerWorker(LoadScopeScheduling):
    """xdist's scope scheduling, with a test's host as its scope: the id testinfra gives each test ends with it
    (`test_x[ansible://rabbitmq-debian12]`)."""

    def _split_scope(self, nodeid):
        return nodeid.rsplit("[", 1)[-1] if nodeid.endswith("]") else nodeid


def pytest_xdist_make_scheduler(config, log):
    return OneHostPerWorker(config, log)
