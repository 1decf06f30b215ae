#!/usr/bin/env python3
"""`make bench`: how long a rollout takes and how much of the broker's speed the
deployed system uses, each figure a ratio against a baseline measured in the
same run (these machines are noisy). Prints a Markdown table and the same
figures as JSON, and writes both to $BENCH_OUT (default .bench/).

Each run converges the `bench` Molecule scenario (8 fresh containers) and
destroys it; BENCH_RUNS (default 3) runs give min, median and max. Method:
docs/BENCHMARKS.md.
"""

import json
import sys

from harness import LOG, OUT, RUNS, SPARES, changed_hosts, molecule, playbook, say
from measures import floor, memory, throughput
from report import machine, markdown, summarize


# --- a run: fresh containers, the floor, then the bundle on new ones --------

def one_run(index):
    figures = {}
    say(f"run {index + 1}/{RUNS}: containers for the floor")
    figures["containers_up"] = [molecule("create", f"r{index}-create-floor") + molecule("prepare", f"r{index}-prepare-floor")]
    say("floor: the same packages and services with a plain script")
    figures["floor"] = floor(index)
    figures["containers_down"] = [molecule("destroy", f"r{index}-destroy-floor")]
    say("fresh containers for the bundle")
    figures["containers_up"].append(molecule("create", f"r{index}-create") + molecule("prepare", f"r{index}-prepare"))
    say("first converge of site.yml")
    seconds, plays, _ = playbook("playbooks/site.yml", f"r{index}-converge")
    figures["converge"] = seconds
    figures["converge_plays"] = {p["hosts"]: p["seconds"] for p in plays}
    figures["converge_broker"] = sum(p["seconds"] for p in plays if p["hosts"] == "broker")
    say("no-change re-run of site.yml")
    seconds, plays, output = playbook("playbooks/site.yml", f"r{index}-rerun")
    figures["rerun"] = seconds
    figures["rerun_plays"] = {p["hosts"]: p["seconds"] for p in plays}
    figures["rerun_changed_hosts"] = changed_hosts(output)
    say("throughput: Celery against raw AMQP")
    figures["throughput"] = throughput(index)
    say("memory of a worker over many tasks")
    figures["memory"] = memory(index)
    figures["scale_out"] = []
    for number, spare in enumerate(SPARES, start=2):
        say(f"add-worker.yml: worker node {number} ({spare})")
        extra = OUT / f"workers-{number}.yml"
        extra.write_text(json.dumps({"all": {"children": {"workers": {"hosts": {s: {} for s in SPARES[:number - 1]}}}}}))
        seconds, _, _ = playbook("playbooks/add-worker.yml", f"r{index}-add-worker-{number}",
                                 "-i", str(extra), "-e", f"new_worker={spare}")
        figures["scale_out"].append(seconds)
    figures["containers_down"].append(molecule("destroy", f"r{index}-destroy"))
    return figures


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    info = machine()
    say(f"{RUNS} run(s); logs in {LOG}")
    runs = []
    try:
        molecule("destroy", "destroy-leftovers")
        for index in range(RUNS):
            runs.append(one_run(index))
            (OUT / "runs.json").write_text(json.dumps(runs, indent=1))
    finally:
        say("cleaning up")
        molecule("destroy", "destroy-final")
    summary = summarize(runs)
    table = markdown(summary, info)
    document = {"machine": info, "runs": runs, "summary": summary}
    (OUT / "results.md").write_text(table + "\n")
    (OUT / "results.json").write_text(json.dumps(document, indent=1))
    print(table)
    print()
    print(json.dumps({"machine": info, "summary": summary}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
