"""The one contract between the launcher and its ranks (submitit's ``JobEnvironment`` idea).

The launcher writes ``plan/contract.json`` into the run directory; every rank reads it and checks
the numbers it really got (world size, accumulation, global batch) against it before step 1.
:class:`RunLayout` names every file of a run directory in one place, so that the launcher, the
ranks and the tests agree on where things are.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """Where everything of one run lives, relative to its run directory."""

    root: Path

    @property
    def plan_dir(self) -> Path:
        return self.root / "plan"

    @property
    def recipe_file(self) -> Path:
        return self.plan_dir / "recipe.yaml"

    @property
    def contract_file(self) -> Path:
        return self.plan_dir / "contract.json"

    @property
    def accelerate_file(self) -> Path:
        return self.plan_dir / "accelerate.yaml"

    @property
    def deepspeed_file(self) -> Path:
        return self.plan_dir / "deepspeed.json"

    @property
    def trainer_args_file(self) -> Path:
        return self.plan_dir / "trainer_args.json"

    @property
    def command_file(self) -> Path:
        return self.plan_dir / "command.sh"

    @property
    def summary_file(self) -> Path:
        return self.plan_dir / "summary.txt"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def rank_log(self, rank: int) -> Path:
        return self.logs_dir / f"rank-{rank}.log"

    @property
    def launcher_log(self) -> Path:
        return self.logs_dir / "launcher.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard event files, written by rank 0 (``tensorboard --logdir RUN/tensorboard``)."""
        return self.root / "tensorboard"

    @property
    def smoke_data_dir(self) -> Path:
        return self.root / "smoke-data"

    @property
    def result_file(self) -> Path:
        return self.root / "result.json"

    @property
    def stopped_file(self) -> Path:
        """Written by rank 0 once an attempt stopped on a signal with a complete checkpoint."""
        return self.root / "stopped.json"

    @property
    def attempts_file(self) -> Path:
        """One JSON line per attempt event: start, end, reason, resumed-from step."""
        return self.root / "attempts.jsonl"

    @property
    def job_file(self) -> Path:
        """The scheduler job this run was submitted as (cluster runs)."""
        return self.root / "job.json"

    @property
    def slurm_dir(self) -> Path:
        """submitit's folder: pickled task, batch script, per-node stdout/stderr."""
        return self.root / "slurm"

    def failure_file(self, rank: int) -> Path:
        return self.logs_dir / f"failure-rank-{rank}.json"


@dataclass(frozen=True)
class RunContract:
    """What the launcher promises every rank; ranks refuse to train when reality differs."""

    run_dir: str
    task: str
    world_size: int
    nodes: int
    processes_per_node: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    global_batch_size: int
    max_length: int
    smoke: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> RunContract:
        return cls(**json.loads(path.read_text()))
