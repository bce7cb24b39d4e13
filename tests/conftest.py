"""Shared helpers: run the real ``launcher`` command line and read what a run left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
SHARED_DATA = REPO.parent / "shared" / "data"


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
    if started.returncode != 0:
        pytest.skip(f"the local SLURM cluster did not start:\n{started.stdout}{started.stderr}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch working directory (with a space in its name, to prove paths are quoted)."""
    folder = tmp_path / "work dir"
    folder.mkdir()
    return folder
