"""The batch script ``launcher plan --cluster`` shows and ``launcher submit`` hands to sbatch, for a
GPU site's profile, exactly as recorded; planned where SLURM is not installed (a laptop)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, Golden, launcher

pytestmark = pytest.mark.process

GOLDEN = REPO / "tests" / "backends" / "golden"


@pytest.fixture
def no_slurm_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH without srun or sbatch, as on a laptop (the launcher runs as ``python -m``)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_batch_script_matches_the_recorded_one(
    workdir: Path, golden: Golden, no_slurm_here: None
) -> None:
    """`plan --cluster` shows the exact script (an intended change: --update-golden), without
    SLURM installed: submitit's executor refuses to be built where there is no srun."""
    gpu = REPO / "cluster" / "example-gpu.yaml"
    text = gpu.read_text() + "python: /opt/venv/bin/python\n"
    (workdir / "gpu.yaml").write_text(text)
    out = launcher(
        "plan",
        "sft-mistral-7b-zero3",
        "--cluster",
        str(workdir / "gpu.yaml"),
        "--run-dir",
        "/scratch/runs/mistral 7b",
        cwd=workdir,
    ).stdout
    script = out.split("batch script for cluster gpu-example:\n", 1)[1]
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=8" in script
    assert "#SBATCH --signal=USR2@120" in script and "#SBATCH --requeue" in script
    golden.check({GOLDEN / "sft-mistral-7b-zero3.gpu-example.sh": script}, "the batch script")


def test_submit_without_sbatch_says_where_to_submit_from(
    workdir: Path, no_slurm_here: None
) -> None:
    out = launcher("submit", "sft-mistral", "--cluster", "dev", cwd=workdir, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert "needs SLURM's sbatch, and there is none on PATH here" in out.stderr
    assert "login node of cluster 'dev'" in out.stderr and "--dry-run" in out.stderr
    assert not (workdir / "runs").exists(), "a refused submit left a run directory"
    dry = launcher("submit", "sft-mistral", "--cluster", "dev", "--dry-run", cwd=workdir)
    assert "srun --unbuffered" in dry.stdout and "#SBATCH --requeue" in dry.stdout
