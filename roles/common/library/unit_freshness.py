#!/usr/bin/python
"""Ansible module: which running systemd units are older than what they run from.

A unit is stale when its main process started before one of its inputs last
changed (its unit file, its drop-ins, its environment files, any extra file
the caller names) or when it runs in another release directory than the one
its WorkingDirectory= link points to now. Nothing here changes the host.
"""

import os
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: unit_freshness
short_description: Tell which running systemd units run an old release or old settings
description:
  - Compares each unit's main process with the files it was started from, as systemd reports them
    (FragmentPath, DropInPaths, EnvironmentFiles), plus any extra files, and with the release its
    WorkingDirectory= link points to now (the process's own working directory is the release it started in).
  - Only reads; runs in check mode.
options:
  units:
    description: Unit names, such as gunicorn.service or celery-worker@default.service.
    type: list
    elements: str
    required: true
  extra_files:
    description: Further files whose change makes every listed unit stale.
    type: list
    elements: path
    default: []
author: deployment bundle maintainers
"""

RETURN = r"""
units:
  description: One entry per unit, in the order given.
  type: list
  returned: always
  contains:
    unit: {description: The unit's name., type: str}
    active: {description: Whether it runs now., type: bool}
    stale: {description: Whether it must be restarted to run what is on disk., type: bool}
    reasons: {description: Why it is stale, for people., type: list}
    need_daemon_reload: {description: systemd has not read its changed unit file yet., type: bool}
    running_release: {description: Directory its main process runs in., type: str}
    live_release: {description: Directory its WorkingDirectory= resolves to now., type: str}
stale:
  description: Names of the stale units.
  type: list
  returned: always
"""

PROPERTIES = [
    "ActiveState",
    "MainPID",
    "User",
    "ExecMainStartTimestampMonotonic",
    "WorkingDirectory",
    "FragmentPath",
    "DropInPaths",
    "EnvironmentFiles",
    "NeedDaemonReload",
]


def show(unit):
    out = subprocess.run(
        ["systemctl", "show", "--property=" + ",".join(PROPERTIES), "--", unit],
        check=True, capture_output=True, text=True,
    ).stdout
    props = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        # EnvironmentFiles= appears once per file: "/etc/app/env (ignore_errors=no)".
        props.setdefault(key, []).append(value)
    return props


def first(props, key):
    return (props.get(key) or [""])[0]


def process_cwd(pid, user):
    """The process's working directory. Root may lack CAP_SYS_PTRACE (a container,
    a hardened host), so a process of another user is asked as that user."""
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except PermissionError:
        if not user:
            raise
        return subprocess.run(
            ["runuser", "-u", user, "--", "readlink", f"/proc/{pid}/cwd"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()


def started_at(props):
    """The main process's start, on the wall clock, to the microsecond."""
    monotonic_us = int(first(props, "ExecMainStartTimestampMonotonic") or 0)
    return time.clock_gettime(time.CLOCK_REALTIME) - (time.clock_gettime(time.CLOCK_MONOTONIC) - monotonic_us / 1e6)


def inputs(props, extra_files):
    files = [first(props, "FragmentPath")]
    files += " ".join(props.get("DropInPaths", [])).split()
    files += [value.split(" (")[0] for value in props.get("EnvironmentFiles", []) if value]
    return [path for path in files + list(extra_files) if path and os.path.exists(path)]


def state(unit, extra_files):
    props = show(unit)
    entry = {
        "unit": unit,
        "active": first(props, "ActiveState") == "active",
        "need_daemon_reload": first(props, "NeedDaemonReload") == "yes",
        "running_release": "",
        "live_release": "",
        "reasons": [],
    }
    pid = first(props, "MainPID")
    if not entry["active"] or pid in ("", "0"):
        entry["stale"] = False
        return entry
    if entry["need_daemon_reload"]:
        entry["reasons"].append("its unit file changed on disk")
    started = started_at(props)
    for path in inputs(props, extra_files):
        if os.stat(path).st_mtime > started:
            entry["reasons"].append(f"{path} changed after it started")
    workdir = first(props, "WorkingDirectory").lstrip("-!")
    if workdir and os.path.isdir(workdir):
        entry["live_release"] = os.path.realpath(workdir)
        entry["running_release"] = process_cwd(pid, first(props, "User"))
        if entry["running_release"] != entry["live_release"]:
            entry["reasons"].append(f"it runs {entry['running_release']}, the live release is {entry['live_release']}")
    entry["stale"] = bool(entry["reasons"])
    return entry


def main():
    module = AnsibleModule(
        argument_spec={
            "units": {"type": "list", "elements": "str", "required": True},
            "extra_files": {"type": "list", "elements": "path", "default": []},
        },
        supports_check_mode=True,
    )
    try:
        units = [state(unit, module.params["extra_files"]) for unit in module.params["units"]]
    except (OSError, subprocess.CalledProcessError) as error:
        module.fail_json(msg=f"could not read the state of the units: {error}")
    module.exit_json(changed=False, units=units, stale=[u["unit"] for u in units if u["stale"]])


if __name__ == "__main__":
    main()
