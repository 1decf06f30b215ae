"""Writes each play's wall time to the JSON file named by BENCH_PLAY_TIMES, so
bench.py can take one tier's share out of a whole site.yml run."""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: play_times
type: aggregate
short_description: each play's wall time as JSON, for scripts/bench
description: Enabled by scripts/bench/bench.py only.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "play_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.plays = []

    def _close_last(self):
        if self.plays and "seconds" not in self.plays[-1]:
            self.plays[-1]["seconds"] = round(time.monotonic() - self.plays[-1].pop("started"), 2)

    def v2_playbook_on_play_start(self, play):
        self._close_last()
        # The pattern as written (it may still hold a template): "broker" for the broker tier.
        pattern = play.hosts if isinstance(play.hosts, str) else ",".join(play.hosts)
        self.plays.append({"name": play.get_name(), "hosts": pattern, "started": time.monotonic()})

    def v2_playbook_on_stats(self, stats):
        self._close_last()
        path = os.environ.get("BENCH_PLAY_TIMES")
        if path:
            with open(path, "w") as out:
                json.dump(self.plays, out, indent=1)
