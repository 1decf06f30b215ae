"""The strategy of the plays that let each host go at its own pace (monitoring.yml): free, through Mitogen.

With Mitogen each host keeps one Python interpreter for the whole run, and a task's module is imported there
instead of being shipped, unpacked and compiled by a fresh interpreter on the host: the same tasks, at
a fraction of the CPU a task costs the host. BUNDLE_MITOGEN=off, a missing mitogen package
(requirements.txt pins it) or an Ansible release Mitogen does not support give the plain free strategy, with
a warning.
"""

import os

from ansible.errors import AnsibleError
from ansible.utils.display import Display

try:
    if os.environ.get("BUNDLE_MITOGEN", "on") == "off":
        raise ImportError("BUNDLE_MITOGEN=off")
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except (ImportError, AnsibleError) as error:
    from ansible.plugins.strategy.free import StrategyModule  # noqa: F401

    Display().warning(f"Mitogen is not in use ({error}): the plain free strategy runs.")
else:
    class StrategyModule(ansible_mitogen.strategy.StrategyMixin,
                         ansible_mitogen.loaders.strategy_loader.get("free", class_only=True)):
        pass
