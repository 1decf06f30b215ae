#!/usr/bin/env python3
"""No block of six or more lines stands twice in roles/ and playbooks/: a repeated block belongs in `common`.

Reads every task, template, handler, vars and script file (READMEs may quote the code they document) and
compares them line by line, indentation folded. Lines that say nothing on their own are passed over: blank
lines, comments, YAML document markers, a key or a unit-file section that only opens what follows (`vars:`,
`[Service]`), and the flags that every task of a kind carries (`quiet: true`, `tags: [always]`). So calling a shared entry point with other arguments
is not a repeat; writing its tasks again is. Run by `make lint`; exits 1 and lists each repeat.
"""

import collections
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ("roles", "playbooks")
SUFFIXES = {".yml", ".yaml", ".j2", ".py", ".sh", ".conf", ".cfg"}
LINES = int(sys.argv[1]) if len(sys.argv) > 1 else 6
SILENT = re.compile(r"^(#.*|---|\.\.\.|\[[A-Za-z]+\]|-?\s*[A-Za-z0-9_.]+:|quiet: true|tags: \[always\]|apply: \{tags: \[always\]\})$")


def meaningful(path):
    """(line number, folded text) of the lines that count."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = " ".join(line.split())
        if text and not SILENT.match(text):
            lines.append((number, text))
    return lines


def main():
    files = {
        path: meaningful(path)
        for tree in TREES
        for path in sorted((ROOT / tree).rglob("*"))
        if path.is_file() and path.suffix in SUFFIXES
    }
    places = collections.defaultdict(list)
    for path, lines in files.items():
        for start in range(len(lines) - LINES + 1):
            places[tuple(text for _, text in lines[start : start + LINES])].append((path, start))
    # Merge overlapping windows into one run per place, so a long repeat is one report.
    covered = collections.defaultdict(set)
    for block, where in places.items():
        if len(where) > 1:
            for path, start in where:
                covered[path].update(range(start, start + LINES))
    problems = []
    for path, indexes in covered.items():
        indexes = sorted(indexes)
        runs, first = [], indexes[0]
        for previous, index in zip(indexes, indexes[1:]):
            if index != previous + 1:
                runs.append((first, previous))
                first = index
        runs.append((first, indexes[-1]))
        lines = files[path]
        for first, last in runs:
            problems.append(
                f"{path.relative_to(ROOT)}:{lines[first][0]}-{lines[last][0]}: {last - first + 1} lines that stand"
                f" elsewhere too, from: {lines[first][1][:80]}"
            )
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} repeated blocks of {LINES} or more lines: write each once, in common, and include it.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
