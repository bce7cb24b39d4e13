"""The attempt records of a cluster run when a node task cannot write its own end: SLURM killed it
(its ranks took longer than KillWait to save and exit) or its node died with it. The next
attempt's first node records that end before its own start."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO

from launcher.backends.attempts import read_attempts, record_attempt
from launcher.backends.run_dir import prepare_run_dir
from launcher.backends.slurm_node import NodePlace, record_start
from launcher.contract import RunLayout
from launcher.plan.build import build_plan
from launcher.recipe.loader import load_recipe


def run_with_an_unended_attempt(tmp_path: Path) -> tuple[RunLayout, NodePlace]:
    layout = RunLayout(tmp_path / "run")
    prepare_run_dir(build_plan(load_recipe(REPO / "recipes" / "mlm-scratch.yaml"), layout.root))
    record_attempt(layout, {"event": "start", "job_id": "7", "attempt": 0})
    return layout, NodePlace(job_id="7", node_rank=0, num_nodes=1, main_host="n1", attempt=1)


def test_an_attempt_killed_after_its_ranks_saved_is_recorded_as_what_stopped_it(
    tmp_path: Path,
) -> None:
    layout, place = run_with_an_unended_attempt(tmp_path)
    layout.stopped_file.write_text(json.dumps({"signal": "SIGTERM", "step": 12}))
    record_start(layout, place)
    ended, started = read_attempts(layout)[1:]
    assert (ended["event"], ended["attempt"], ended["reason"], ended["step"]) == (
        "end", 0, "preempted", 12,
    )  # fmt: skip
    assert (started["event"], started["attempt"]) == ("start", 1)


def test_an_attempt_that_left_no_trace_is_recorded_as_lost(tmp_path: Path) -> None:
    layout, place = run_with_an_unended_attempt(tmp_path)
    record_start(layout, place)
    ended = read_attempts(layout)[1]
    assert (ended["attempt"], ended["reason"], ended["step"]) == (0, "lost", None)
    record_start(layout, place)  # the same attempt again (the other record is not repeated)
    assert [e["event"] for e in read_attempts(layout)] == ["start", "end", "start", "start"]
