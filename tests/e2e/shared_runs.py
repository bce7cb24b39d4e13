"""Runs that several e2e tests check, trained once per session, in the background.

``launcher run sft-mistral --smoke smoke.max_steps=60 smoke.checkpoint_every=2`` in the four
configurations of ``SCENARIOS`` (DDP on one rank and on two, DeepSpeed ZeRO-2 and ZeRO-3 on two,
accumulating over 2 micro-batches).
For each of them:

- ``whole``: a reference run, trained without interruption, with a data cache of its own (so it
  prepares the data itself). tests/e2e/test_export.py exports its checkpoints; test_integration.py
  checks them as runs of their own (SFT on two DDP ranks, paged AdamW under ZeRO-2 and ZeRO-3),
  stops the same job on SIGTERM, continues it, and compares the weights with it.
- ``killed``: the fault injection of test_fault_injection.py, in the same data cache: the same run
  SIGKILLed at random moments (``KILLS``) (every other one while a checkpoint is being written) and
  resumed after each kill, then run to its end and compared with ``whole``. Once compared, a few
  tests of test_integration.py take the finished directory over (cut a checkpoint short, continue
  on another world size).

Each launch spends seconds importing torch, transformers, DeepSpeed and bitsandbytes in its
processes, mostly on one core, so the four scenarios run side by side in threads, from the first
e2e test on, while the e2e tests go on; those that need no shared run come first, those that wait
for the killed runs last (``pytest_collection_modifyitems``). Test
modules use this file with ``pytest_plugins = ["shared_runs"]`` (one session fixture for all).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from conftest import load_weights, worker_group
from run_scenarios import (
    HANG,
    KILLS,
    SCENARIOS,
    STEPS,
    data_preparation,
    rank_log_since,
    scenario_args,
)

from launcher.checkpoints import checkpoint_step, latest_complete_checkpoint

E2E = Path(__file__).resolve().parent
LAUNCH_TIMEOUT_S = 900
# One OpenMP thread per rank: the e2e tests run several ranks side by side on a few cores, where
# each rank's own pool of threads (accelerate gives a lone CPU rank one per core) would mostly
# wait on the others, spinning: DeepSpeed runs took 2 to 4 times as long. The threads do not
# change what is checked (a run and its resumed copy use the same number).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Killed:
    """A finished fault-injection scenario: the run directory and a one-line summary."""

    run_dir: Path
    summary: str


class Cancelled(Exception):
    """The session ended (or failed) before this run was needed."""


class SharedRuns:
    """The scenarios' threads and what they produced; ``reference`` and ``killed`` wait for it."""

    def __init__(self, root: Path, kills: bool):
        self.root, self.kills = root, kills
        # The environment when the session started, not as a test may have patched it later.
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **ONE_THREAD,
        }
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.cancelled = False
        self.taken: set[str] = set()
        self.whole: dict[str, Future[Path]] = {name: Future() for name in SCENARIOS}
        self.outcome: dict[str, Future[Killed]] = {name: Future() for name in SCENARIOS}
        self.pool = ThreadPoolExecutor(len(SCENARIOS), thread_name_prefix="shared-run")
        for name in SCENARIOS:
            self.pool.submit(self.scenario, name)

    def reference(self, name: str) -> Path:
        """The finished uninterrupted run of scenario ``name`` (read it, never change it)."""
        return self.wait(self.whole[name], f"the reference run of {name}")

    def killed(self, name: str) -> Killed:
        """The finished fault-injection run of ``name``; AssertionError if the scenario failed."""
        if not self.kills:
            raise RuntimeError("the kills were not started: use the fault_injection fixture")
        return self.wait(self.outcome[name], f"the fault injection of {name}")

    def take(self, name: str) -> Path:
        """The finished and checked killed run of ``name``, for one test to continue or change."""
        with self.lock:
            assert name not in self.taken, f"another test took the killed run of {name} already"
            self.taken.add(name)
        return self.killed(name).run_dir

    def wait(self, future: Future, what: str):  # type: ignore[no-untyped-def]
        try:
            return future.result(timeout=3600)
        except concurrent.futures.TimeoutError:
            raise AssertionError(f"{what} did not finish in an hour") from None

    # -- the work, in the pool's threads ---------------------------------------------------------

    def scenario(self, name: str) -> None:
        folder = self.root / name
        cache = folder / "cache"
        whole, killed = folder / "whole", folder / "killed"
        try:
            folder.mkdir()
            self.run(scenario_args(name), whole, cache)
            self.whole[name].set_result(whole)
        except BaseException as error:  # every waiting test sees why
            self.whole[name].set_exception(error)
            self.outcome[name].set_exception(error)
            return
        if not self.kills:
            return
        try:
            self.outcome[name].set_result(self.kill_and_resume(name, whole, killed, cache))
        except BaseException as error:
            self.outcome[name].set_exception(error)

    def start(self, args: list[str], run_dir: Path, cache: Path, capture: bool) -> subprocess.Popen:
        """``launcher run ARGS --run-dir RUN_DIR`` in its own session, with data cache ``cache``."""
        with self.lock:
            if self.cancelled:
                raise Cancelled(f"{run_dir} was not started: the session ended")
            process = subprocess.Popen(
                [sys.executable, "-m", "launcher", "run", *args, "--run-dir", str(run_dir)],
                cwd=run_dir.parent,
                env={**self.env, "LAUNCHER_CACHE": str(cache)},
                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
            )
            self.running.add(process)
        return process

    def finish(self, process: subprocess.Popen) -> None:
        with self.lock:
            self.running.discard(process)

    def run(self, args: list[str], run_dir: Path, cache: Path) -> str:
        """Run to its end; what it printed. AssertionError unless it exited 0."""
        process = self.start(args, run_dir, cache, capture=True)
        try:
            output, _ = process.communicate(timeout=LAUNCH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            kill_everything(process)
            raise AssertionError(f"{run_dir}: still running after {LAUNCH_TIMEOUT_S} s") from None
        finally:
            self.finish(process)
        if process.returncode != 0:
            raise AssertionError(
                f"launcher run {' '.join(args)} --run-dir {run_dir} exited "
                f"{process.returncode}\n--- output (tail)\n{output[-6000:]}"
            )
        return output

    def run_and_kill(
        self, args: list[str], run_dir: Path, cache: Path, target: int, delay: float, mid_save: bool
    ) -> bool:
        """Start `launcher run`; SIGKILL all of its processes once it trained to step ``target``
        and ``delay`` s more (at most until it logged step ``target + 2``: a random moment inside
        a step, an optimizer update or a save), or the moment a checkpoint is being written.
        True if it finished first."""
        metrics_file = run_dir / "metrics.jsonl"
        offset = metrics_file.stat().st_size if metrics_file.exists() else 0
        process = self.start(args, run_dir, cache, capture=False)
        checkpoints = run_dir / "checkpoints"
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if mid_save:
                    if newest_step(metrics_file, offset) >= 1:
                        # From the first step of this attempt on, only the checkpoint folders.
                        while process.poll() is None and time.monotonic() < deadline:
                            if save_in_flight(checkpoints):
                                break
                            time.sleep(0.001)
                        break
                elif newest_step(metrics_file, offset) >= target:
                    until = time.monotonic() + delay
                    while time.monotonic() < until and process.poll() is None:
                        if newest_step(metrics_file, offset) >= target + 2:
                            break
                        time.sleep(0.005)
                    break
                time.sleep(0.02)
            finished = process.poll() is not None
            kill_everything(process)
        finally:
            self.finish(process)
        assert time.monotonic() < deadline, f"{run_dir}: the run neither progressed nor finished"
        return finished and (run_dir / "result.json").exists()

    def run_and_hang(self, args: list[str], run_dir: Path, cache: Path, target: int) -> None:
        """Stop rank 1 (SIGSTOP) once the run trained to step ``target``: rank 0 gives up after
        ``distributed.timeout_min`` and the run ends naming rank 1, instead of hanging to a time
        limit. Rank 1 is continued once rank 0 recorded its failure, so that it takes the stop
        its launcher sent and the attempt ends without waiting out torchrun's grace period."""
        metrics_file, logs = run_dir / "metrics.jsonl", run_dir / "logs"
        offset = metrics_file.stat().st_size if metrics_file.exists() else 0
        started = time.time()
        process = self.start(args, run_dir, cache, capture=True)
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        try:
            while newest_step(metrics_file, offset) < target:
                assert process.poll() is None, f"{run_dir}: ended before step {target}"
                assert time.monotonic() < deadline, f"{run_dir}: no step {target}"
                time.sleep(0.02)
            beat = json.loads((logs / "heartbeat-rank-1.json").read_text())
            assert beat["time"] >= started, beat  # this attempt's rank 1
            os.kill(beat["pid"], signal.SIGSTOP)
            while not (logs / "failure-rank-0.json").exists() and process.poll() is None:
                assert time.monotonic() < deadline, f"{run_dir}: rank 0 never gave up"
                time.sleep(0.1)
            os.kill(beat["pid"], signal.SIGCONT)
            output, _ = process.communicate(timeout=LAUNCH_TIMEOUT_S)
        finally:
            kill_everything(process)
            self.finish(process)
        assert process.returncode == 1, output[-4000:]
        assert "training failed" in output, output[-4000:]
        # The error once: no traceback of a rank that only lost its peer, none of torchrun's.
        assert "Traceback" not in output and "ChildFailedError" not in output, output[-4000:]
        assert re.search(
            r"a collective waited longer than distributed\.timeout_min \(0\.5 min\) on rank 0; "
            rf"ranks that did not arrive: rank 1 \(host [^,]+, pid {beat['pid']}, last finished "
            r"step \d+, silent for \d+ s\)",
            output,
        ), output[-4000:]

    def kill_and_resume(self, name: str, whole: Path, killed: Path, cache: Path) -> Killed:
        """``KILLS[name]`` kills with a resume after each, the run to its end, and the comparison
        with the reference; AssertionError naming the scenario when something is wrong."""
        args = scenario_args(name)
        rng = random.Random(f"fault-{name}")
        for attempt in range(KILLS[name]):
            # Random moments: 1 to 4 steps past where this attempt resumes, plus a random fraction
            # of a second, or exactly while a save is in flight (which leaves the newest complete
            # checkpoint where it was). Ten attempts move on by at most 5 x 6 of the 60 steps, so
            # every one of them is killed.
            newest, _ = latest_complete_checkpoint(killed / "checkpoints")
            # The first kill comes after a checkpoint is complete (every 2 steps), so that the
            # last run has one to continue from however few kills a scenario has.
            target = (checkpoint_step(newest) if newest else 0) + rng.randint(
                3 if attempt == 0 else 1, 4
            )
            delay = rng.uniform(0.0, 0.3)
            mid_save = attempt % 2 == 1
            if (name, attempt) == HANG:
                self.run_and_hang(args, killed, cache, target)
                continue
            finished = self.run_and_kill(args, killed, cache, target, delay, mid_save)
            assert not finished, f"{name}: attempt {attempt} finished before it could be killed"

        newest, _ = latest_complete_checkpoint(killed / "checkpoints")
        assert newest is not None, f"{name}: the kills left no complete checkpoint"
        log_offset = (killed / "logs" / "rank-0.log").stat().st_size
        output = self.run(args, killed, cache)
        log = rank_log_since(killed, 0, log_offset)

        # The last attempt continued the run from its newest complete checkpoint, with the data
        # the reference run prepared into the cache (so cached rows train like fresh ones).
        assert f"continuing run in {killed}" in output, f"{name}: {output[-3000:]}"
        # The SIGKILLed launcher left its lock: found stale (pid gone) and taken over.
        assert re.search(
            rf"note: taking over {re.escape(str(killed))} from `launcher run`, pid \d+ .*that process is gone",
            output,
        ), output[:3000]
        assert f"resuming from {newest}" in log, f"{name}: {log[-3000:]}"
        result = json.loads((killed / "result.json").read_text())
        assert result["global_step"] == STEPS, f"{name}: {result}"
        assert result["resumed_from"] == str(newest.relative_to(killed)), f"{name}: {result}"
        prepared, key = data_preparation(rank_log_since(whole, 0, 0))
        assert prepared == "prepared" and (cache / "data" / key).is_dir(), f"{name}: {prepared}"
        assert data_preparation(log) == ("cache hit", key), f"{name}: {log[-3000:]}"

        set_aside = list((killed / "checkpoints").glob("incomplete-checkpoint-*"))
        assert set_aside, f"{name}: no kill landed while a checkpoint was being written"
        worst = compare_weights(whole / "model", killed / "model", SCENARIOS[name][1], name)
        return Killed(
            killed,
            f"{name}: {KILLS[name]} kills, {len(set_aside)} incomplete checkpoints set aside, last "
            f"resumed from {newest.name}, max abs difference {worst}",
        )

    def close(self) -> None:
        """Stop what still runs (a failed or interrupted session) and wait for the threads."""
        with self.lock:
            self.cancelled = True
            running = list(self.running)
        for process in running:
            kill_everything(process)
        self.pool.shutdown(wait=True)


def compare_weights(expected_dir: Path, got_dir: Path, tolerance: float, name: str) -> float:
    """The largest difference between two saved models; AssertionError beyond ``tolerance``, or
    unless bit-identical when ``tolerance`` is 0."""
    import torch

    expected, got = load_weights(expected_dir), load_weights(got_dir)
    assert expected.keys() == got.keys(), name
    worst = 0.0
    for tensor in expected:
        difference = (expected[tensor].float() - got[tensor].float()).abs().max().item()
        worst = max(worst, difference)
        assert difference <= tolerance, f"{name}: {tensor} differs by {difference}"
        if tolerance == 0.0:
            assert torch.equal(expected[tensor], got[tensor]), f"{name}: {tensor} not bit-identical"
    return worst


def kill_everything(process: subprocess.Popen, timeout: float = 60.0) -> None:
    """SIGKILL a launcher started in its own session and every process under it, as at once as
    user space can: each is stopped first (a stopped process starts no other, so the list is
    complete when no new one turns up), then all are killed.

    The launcher's process group is not enough: it starts ``accelerate launch`` in a session of
    its own, and torchrun gives each rank another, so they would outlive the launcher until their
    next write to its closed pipe, still training and writing checkpoints while the next attempt
    starts on the same run directory."""
    deadline = time.monotonic() + timeout
    family: dict[int, psutil.Process] = {}
    new = []
    with contextlib.suppress(psutil.NoSuchProcess):
        new = [psutil.Process(process.pid)]
    while new:
        for member in new:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGSTOP)
                family[member.pid] = member
        for member in new:
            while alive(member, stopped_counts=False) and time.monotonic() < deadline:
                time.sleep(0.001)
        new = [
            child
            for member in list(family.values())
            for child in children(member)
            if child.pid not in family
        ]
        assert time.monotonic() < deadline, f"could not stop the processes of {process.args}"
    for member in family.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait(timeout=max(deadline - time.monotonic(), 1.0))
    while any(alive(member) for member in family.values()):
        assert time.monotonic() < deadline, f"processes of {process.args} outlived SIGKILL"
        time.sleep(0.01)


def alive(member: psutil.Process, stopped_counts: bool = True) -> bool:
    """Whether ``member`` still runs (or, with ``stopped_counts`` false, runs and is not
    stopped). A zombie is dead: only its parent's wait is missing."""
    try:
        status = member.status()
    except psutil.NoSuchProcess:
        return False
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return False
    return stopped_counts or status not in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def children(member: psutil.Process) -> list[psutil.Process]:
    try:
        return member.children()
    except psutil.NoSuchProcess:
        return []


def save_in_flight(checkpoints: Path) -> bool:
    return any(
        folder.is_dir() and not (folder / "launcher-complete.json").exists()
        for folder in checkpoints.glob("checkpoint-*")
    )


def newest_step(metrics_file: Path, offset: int) -> int:
    """The newest step this attempt logged (lines after ``offset`` bytes of metrics.jsonl)."""
    if not metrics_file.exists():
        return 0
    with open(metrics_file, encoding="utf-8") as stream:
        stream.seek(offset)
        tail = stream.read()
    steps = [
        int(line.split('"step": ', 1)[1].split(",", 1)[0])
        for line in tail.splitlines()
        if '"step": ' in line and line.endswith("}")
    ]
    return max(steps, default=0)


# -- pytest: one session object, and the order of the tests that wait for the kills --------------


def waits_for(item: pytest.Item) -> int:
    """How much of the shared runs a test waits for: 0 none, 1 a reference run (``shared_runs``),
    2 one scenario's killed run (``killed_run``), 3 all of them (``fault_injection``)."""
    fixtures = getattr(item, "fixturenames", ())
    for level, fixture in ((3, "fault_injection"), (2, "killed_run"), (1, "shared_runs")):
        if fixture in fixtures:
            return level
    return 0


@pytest.fixture(scope="session")
def shared_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The four scenarios' reference runs; their kills too when a selected test needs them."""
    runs = SharedRuns(
        tmp_path_factory.mktemp("shared runs"),
        kills=any(waits_for(item) >= 2 for item in request.session.items),
    )
    yield runs
    runs.close()


@pytest.fixture(autouse=True)
def one_thread_per_rank(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The e2e tests' own runs too (they train beside the shared ones): see ``ONE_THREAD``.
    The first e2e test starts the shared runs when a selected test needs them, so that the
    tests that need none train beside them instead of after them."""
    if E2E in Path(str(request.node.fspath)).parents:
        for name, value in ONE_THREAD.items():
            monkeypatch.setenv(name, value)
        # Only where the training group runs: under xdist every worker sees every test.
        if worker_group(request.node.nodeid) == "training" and any(
            waits_for(item) for item in request.session.items
        ):
            request.getfixturevalue("shared_runs")


@pytest.fixture
def fault_injection(shared_runs: SharedRuns) -> SharedRuns:
    """``shared_runs``, for the test that waits for every killed run (it goes last)."""
    return shared_runs


@pytest.fixture
def killed_run(shared_runs: SharedRuns) -> Callable[[str], Path]:
    """``killed_run(name)``: the directory of scenario ``name`` once its fault injection finished
    and was checked; the calling test may continue or change it (no other test reads it)."""
    return shared_runs.take


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Among the e2e tests (in their places), those that need no shared run go first, then those
    that read a reference run, then those that wait for the kills, so that each trains while the
    shared runs go on; the one that waits for all of them last of all."""
    places = [i for i, item in enumerate(items) if E2E in Path(str(item.fspath)).parents]
    reordered = sorted((items[i] for i in places), key=waits_for)
    for place, item in zip(places, reordered, strict=True):
        items[place] = item
