"""The batch script ``launcher plan --cluster`` shows and ``launcher submit`` hands to sbatch, for a
GPU site's profile, exactly as recorded (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO, Golden, launcher

pytestmark = pytest.mark.process

GOLDEN = REPO / "tests" / "backends" / "golden"


def test_batch_script_matches_the_recorded_one(workdir: Path, golden: Golden) -> None:
    """`plan --cluster` shows the exact script (an intended change: --update-golden)."""
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
