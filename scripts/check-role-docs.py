#!/usr/bin/env python3
"""Each role's README variable tables say what its meta/argument_specs.yml says, so the two cannot drift apart.

For every role: every option of every entry point has a row in a README table (first column `name`), the row's
default column shows the spec's default, and no row names a variable of the role that the specs do not know.
Run by `make lint`; exits 1 and lists every disagreement.
"""

import re
import sys
from pathlib import Path

import yaml

ROLES = Path(__file__).resolve().parents[1] / "roles"
ROW = re.compile(r"^\|\s*`([a-z_][a-z0-9_]*)`\s*\|([^|]*)\|")


def spec_options(role_dir):
    """{option: default or None} over every entry point (the first spec wins when two share an option)."""
    specs = yaml.safe_load((role_dir / "meta/argument_specs.yml").read_text())["argument_specs"]
    options = {}
    for entry in specs.values():
        for name, option in (entry.get("options") or {}).items():
            options.setdefault(name, option)
    return options


def shown(value):
    """A default as the README writes it, without quotes or backticks."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str):
        text = value
    else:
        text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    return normalise(text)


def normalise(text):
    return re.sub(r"[`\"' ]", "", text)


def check(role_dir):
    readme = role_dir / "README.md"
    problems = []
    rows = {}
    for line in readme.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows.setdefault(match.group(1), match.group(2))
    options = spec_options(role_dir)
    prefix = role_dir.name + "_"
    for name, option in options.items():
        if name not in rows:
            problems.append(f"{name}: in the argument specs, not in a README table")
            continue
        if "default" in option and not isinstance(option["default"], dict):
            if shown(option["default"]) not in normalise(rows[name]):
                problems.append(f"{name}: the README says {rows[name].strip()!r}, the specs' default is {option['default']!r}")
        elif option.get("required") and "required" not in rows[name].lower():
            problems.append(f"{name}: required in the specs, the README says {rows[name].strip()!r}")
    for name in rows:
        if name.startswith(prefix) and name not in options:
            problems.append(f"{name}: in the README, not in the argument specs")
    return [f"roles/{role_dir.name}: {problem}" for problem in problems]


def main():
    problems = [problem for role_dir in sorted(ROLES.iterdir()) if (role_dir / "meta/argument_specs.yml").exists()
                for problem in check(role_dir)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
