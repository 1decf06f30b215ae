"""How confined a systemd unit is, asked of the host the way ops would."""


def exposure(host, unit):
    """systemd-analyze security's overall figure: 0 is fully confined, 10 not at all; MEDIUM starts at 5.0."""
    return float(host.check_output(f"systemd-analyze security {unit} --no-pager | tail -1").split()[-3])


def main_pid(host, unit):
    pid = host.check_output(f"systemctl show --property MainPID --value {unit}")
    assert pid not in ("", "0"), f"{unit} has no main process"
    return pid


def writable(host, unit, path):
    """Whether `path` is on a writable mount in the namespace of the unit's main process.

    Read as the process's own user: root in a test container may not look into
    another user's process."""
    pid = main_pid(host, unit)
    user = host.check_output(f"ps -o user= -p {pid}")
    mounts = [line.split() for line in host.check_output(f"runuser -u {user} -- cat /proc/{pid}/mountinfo").splitlines()]
    covering = [m for m in mounts if path == m[4] or path.startswith(m[4].rstrip("/") + "/")]
    # The last of the longest: a later mount on the same point hides the earlier one.
    deepest = max(covering, key=lambda m: len(m[4]))
    deepest = [m for m in covering if m[4] == deepest[4]][-1]
    return "rw" in deepest[5].split(",")


def capability_bounding_set(host, unit):
    """The unit's main process's bounding set, as the hexadecimal mask of /proc/PID/status."""
    return host.check_output(f"awk '/^CapBnd:/ {{print $2}}' /proc/{main_pid(host, unit)}/status")
