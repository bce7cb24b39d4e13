"""Fault injection: SIGKILL a run at random moments (ten times on DDP, four under ZeRO), resuming
after each; the final weights must equal those of a run that was never interrupted.

Four scenarios (run_scenarios.SCENARIOS): DDP on one rank and on two, ZeRO-2 and ZeRO-3 on two
ranks; bit for bit, except within 1e-6 on two DDP ranks. Every other kill is aimed at a checkpoint
being written (a ``checkpoint-N`` folder without its manifest yet); a scenario fails unless at
least one kill really landed mid-save, which shows as an incomplete checkpoint set aside on the
next resume. A kill stops and kills the launcher, ``accelerate launch`` and every rank.

The last run of each scenario must continue from the newest complete checkpoint the kills left,
loading the data the reference run prepared into the data cache. Each resume after a kill takes
over the run lock the killed launcher left (its pid is gone). On two DDP ranks, one of the ten
interruptions is a hung rank instead (SIGSTOP): the run must end after
``distributed.timeout_min``, naming that rank and its pid, and the resume must still reach the
uninterrupted weights (shared_runs.SharedRuns.run_and_hang).

The kills run in the background (shared_runs.SharedRuns.kill_and_resume), side by side with the
session's other tests; this test waits for them and reports each scenario.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from run_scenarios import SCENARIOS

if TYPE_CHECKING:
    from shared_runs import SharedRuns

pytestmark = pytest.mark.integration
pytest_plugins = ["shared_runs"]


def test_ten_kills_end_with_the_uninterrupted_weights(fault_injection: SharedRuns) -> None:
    failures, summaries = [], []
    for name in SCENARIOS:
        try:
            summaries.append(fault_injection.killed(name).summary)
        except AssertionError as error:
            failures.append(f"{name}: {error}")
    print("\n".join(summaries))
    assert not failures, "\n".join(failures)
