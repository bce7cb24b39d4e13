"""Shared helpers: run the real ``launcher`` command line and read what a run left behind; the
tiers, golden files and the SLURM cluster every test folder shares.

Tests mirror the package (``tests/recipe``, ``tests/plan``, ``tests/backends``, ``tests/ranks``)
and ``tests/e2e`` trains real steps. Tiers, by marker (``make unit`` runs the first alone):

- no marker: in-process, starts nothing; a test that starts a process without saying so fails;
- ``process``: starts the launcher CLI or other programs, trains nothing;
- ``integration``: trains through ``accelerate launch`` (every test under ``tests/e2e``);
- ``slurm``: needs the development cluster (root); when root and the cluster cannot start, fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite golden files and fixtures' expected output from what the code produces now "
        "(each rewritten test is reported as skipped, never as passed: review `git diff tests`)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in Path(str(item.fspath)).relative_to(REPO / "tests").parts[:1]:
            item.add_marker(pytest.mark.integration)


# `make test` runs two pytest workers (pytest-xdist, `-n 2`). The tests that train on every core
# stay in one worker, one after the other: those that submit SLURM jobs (one cluster of two nodes;
# they expect idle nodes) and then the e2e tier (its shared runs are one session fixture). The
# other worker runs everything else meanwhile, mostly while the SLURM tests wait on the scheduler.
# (Both heavy tiers side by side took longer than one after the other: on 2 cores they only slow
# each other down.) xdist's own `xdist_group` marker cannot do this here: under pytest 9 it no
# longer renames the tests it groups, so the group is named from the test's path.
SLURM_JOB_FILES = re.compile(r"tests/backends/test_(slurm|slurm_zero|devcluster)\.py$")
# e2e tests (files, or single tests) that train one rank and use none of the shared runs: they
# run beside the heavy tiers, on the core the other worker leaves idle most of the time. (The two-
# rank LoRA tests did too, once: the suite took longer, and a SLURM requeue test timed out waiting
# for its ranks on the crowded cores.)
ONE_RANK_E2E = (
    "tests/e2e/test_experiment_trackers.py",
    "tests/e2e/test_lora.py::test_qlora_one_rank_resumes_exactly_exports_merges_and_predicts",
)


def worker_group(nodeid: str) -> str:
    """The unit of work a test belongs to: ``training`` (SLURM jobs, then e2e) or the test alone."""
    path = nodeid.split("::", 1)[0]
    if nodeid.startswith(ONE_RANK_E2E):
        return nodeid
    if path.startswith("tests/e2e/") or SLURM_JOB_FILES.search(path):
        return "training"
    return nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    """Under `-n N` (xdist's default distribution), schedule by ``worker_group``; the largest
    groups start first (xdist orders units by size)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return GroupScheduling(config, log)


# Programs a library runs once for itself, not the test: matplotlib asks fontconfig for the fonts
# when it builds its font cache (a fresh machine's first plot); `platform.processor()` asks
# `uname -p` once per process (DeepSpeed's import does, in whichever test imports it first).
LIBRARY_HOUSEKEEPING = {"fc-list", "uname"}


@pytest.fixture(autouse=True)
def processes_are_declared(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The unit tier is in-process: a test without a tier marker that starts a program fails,
    naming the marker it needs, so that `make unit` stays fast and honest."""
    if any(request.node.get_closest_marker(m) for m in ("process", "integration", "slurm")):
        yield
        return
    started: list[str] = []
    original = subprocess.Popen.__init__

    def record(self, args, *rest, **kwargs):  # type: ignore[no-untyped-def]
        # Only the test's own thread: a session fixture may run processes in the background
        # for the tests that declared them.
        program = Path(str(args[0] if isinstance(args, (list, tuple)) else args).split()[0])
        if threading.current_thread() is threading.main_thread() and (
            program.name not in LIBRARY_HOUSEKEEPING
        ):
            started.append(str(args)[:120])
        original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", record)
    yield
    assert not started, (
        f"this test starts processes ({started[0]}); mark it @pytest.mark.process "
        "(or integration/slurm) so that the in-process tier stays in-process"
    )


class Golden:
    """Compare generated text with files kept in git. ``--update-golden`` rewrites the files and
    skips the test instead of passing it: a file compared with itself proves nothing until a
    person reviewed the diff."""

    def __init__(self, update: bool):
        self.update = update

    def check(self, expected: dict[Path, str], what: str = "the output") -> None:
        """``expected``: each golden file and the text now generated for it."""
        if self.update:
            rewritten = []
            for path, actual in expected.items():
                if not path.exists() or path.read_text() != actual:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(actual)
                    rewritten.append(str(path.relative_to(REPO)))
            pytest.skip(f"--update-golden rewrote {', '.join(rewritten) or 'nothing'}")
        for path, actual in expected.items():
            assert path.exists(), f"{path} is missing: run pytest with --update-golden, review it"
            assert actual == path.read_text(), (
                f"{what} differs from {path.relative_to(REPO)}; if the change is intended, "
                "rerun with --update-golden and review `git diff tests`"
            )


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    return Golden(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True, scope="session")
def private_data_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs started by the tests share one data cache of their own, never the user's."""
    if "LAUNCHER_CACHE" not in os.environ:
        os.environ["LAUNCHER_CACHE"] = str(tmp_path_factory.mktemp("launcher-cache"))


def launcher(
    *args: str, cwd: Path, check: bool = True, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run ``python -m launcher ARGS`` the way a user would, offline, and return what it printed."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"launcher {' '.join(args)} exited {result.returncode}\n"
            f"--- stdout (tail)\n{result.stdout[-6000:]}\n--- stderr (tail)\n{result.stderr[-6000:]}"
        )
    return result


def cli(*args: str) -> tuple[int, str, str]:
    """``launcher ARGS`` in this process (the unit tier): (exit code, stdout, stderr)."""
    from launcher.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def start_launcher(*args: str, cwd: Path, capture: bool = False) -> subprocess.Popen:
    """Start ``python -m launcher ARGS`` in the background, in its own process group (so that a
    test can signal or kill the launcher and its ranks together)."""
    return subprocess.Popen(
        [sys.executable, "-m", "launcher", *args],
        cwd=cwd,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"},
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="session")
def cluster() -> None:
    """The local development SLURM cluster (cluster/devcluster.sh), started once per session."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (cluster/devcluster.sh start)")
    started = subprocess.run(
        [str(REPO / "cluster" / "devcluster.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if started.returncode != 0:  # as root the tier must run: a broken cluster is a failure
        pytest.fail(f"the local SLURM cluster did not start:\n{started.stdout}{started.stderr}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch working directory (with a space in its name, to prove paths are quoted)."""
    folder = tmp_path / "work dir"
    folder.mkdir()
    return folder
