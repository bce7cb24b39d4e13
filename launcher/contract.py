"""The one contract between the launcher and its ranks (submitit's ``JobEnvironment`` idea).

The launcher writes ``plan/contract.json`` into the run directory; every rank reads it and checks
the numbers it really got (world size, accumulation, global batch) against it before step 1.
:class:`RunLayout` names every file of a run directory in one place, so that the launcher, the
ranks and the tests agree on where things are.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

NODE_PLACEHOLDER = "{node}"
RANK_ENTRY_MODULE = "launcher.ranks.entry"
# Set by the launcher for its ranks: `bar` when its output is a terminal (progress bars), else
# periodic progress lines (a log file, a pipe, SLURM's output file).
PROGRESS_ENV = "LAUNCHER_PROGRESS"


@dataclass(frozen=True)
class RunLayout:
    """Where everything of one run lives, relative to its run directory."""

    root: Path

    @property
    def marker_file(self) -> Path:
        """Written when the launcher makes the run directory: only a folder holding it (or an
        empty one) is ever written into or renamed by ``--from-scratch``."""
        return self.root / "launcher-run.json"

    @property
    def lock_file(self) -> Path:
        """Who writes into this run now (``launcher.backends.run_lock``)."""
        return self.root / "lock.json"

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
    def base_model_dir(self) -> Path:
        """The frozen weights LoRA adapters train on, when the model is built from config."""
        return self.root / "base-model"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard_dir(self) -> Path:
        """TensorBoard event files, written by rank 0 (``tensorboard --logdir RUN/tensorboard``)."""
        return self.root / "tensorboard"

    @property
    def tracking_file(self) -> Path:
        """The run's W&B and MLflow run ids, made once by rank 0 and reused by every attempt
        (``launcher.ranks.trackers``)."""
        return self.root / "tracking.json"

    @property
    def wandb_dir(self) -> Path:
        """W&B's files (``WANDB_DIR`` is the run directory); offline runs are folders in it."""
        return self.root / "wandb"

    @property
    def mlflow_dir(self) -> Path:
        """MLflow's store when no other is given: ``mlflow.db`` (SQLite) and ``artifacts/``."""
        return self.root / "mlflow"

    @property
    def smoke_data_dir(self) -> Path:
        return self.root / "smoke-data"

    @property
    def result_file(self) -> Path:
        return self.root / "result.json"

    @property
    def data_summary_file(self) -> Path:
        """Rows, tokens and padding of the data this run last prepared (or found cached)."""
        return self.root / "data-summary.json"

    @property
    def stopped_file(self) -> Path:
        """Written by rank 0 once an attempt stopped on a signal with a complete checkpoint."""
        return self.root / "stopped.json"

    @property
    def attempts_file(self) -> Path:
        """One JSON line per attempt event: start, end, reason, resumed-from step."""
        return self.root / "attempts.jsonl"

    @property
    def cancel_file(self) -> Path:
        """Written by ``launcher cancel`` before ``scancel``: a SIGTERM that follows is a cancel,
        not a preemption (the scheduler shows both as COMPLETING while the ranks save)."""
        return self.root / "cancel-requested.json"

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

    def failure_records(self) -> list[dict]:
        """The failure reports of this attempt's ranks (``failure_file``), in file-name order;
        one that cannot be read (cut short by a kill) is left out."""
        records = []
        for path in sorted(self.logs_dir.glob("failure-rank-*.json")):
            try:
                records.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return records


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
    # Where checkpoints go: the run's own folder (empty: RUN/checkpoints, also for runs planned
    # before this field existed), or a node-local folder whose `{node}` each node fills in.
    checkpoints_dir: str = ""
    checkpoints_on_each_node: bool = False

    def checkpoints_folder(self, node: str | None = None) -> Path:
        """This node's checkpoint folder (``node`` defaults to the node this process runs on)."""
        if not self.checkpoints_dir:
            return RunLayout(Path(self.run_dir)).checkpoints_dir
        return Path(self.checkpoints_dir.replace(NODE_PLACEHOLDER, node or this_node()))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, path: Path) -> RunContract:
        return cls(**json.loads(path.read_text()))


def this_node() -> str:
    """The name of the node this process runs on: SLURM's name for it, else the short host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]


@dataclass(frozen=True)
class Rendezvous:
    """Where one node of a multi-node job meets the others (from SLURM, on each node)."""

    num_nodes: int
    node_rank: int
    main_host: str
    port: int


def rank_launch_command(
    python: str,
    accelerate_config: Path,
    *module_args: str,
    module: str = RANK_ENTRY_MODULE,
    rendezvous: Rendezvous | None = None,
    port: int | None = None,
) -> list[str]:
    """The one way ranks are started: ``accelerate launch`` with a plan's Accelerate config,
    running ``module`` (the rank entry: ``RUN_DIR``) in every rank. ``rendezvous`` places this
    node in a multi-node job; ``port`` alone picks the rendezvous port on one machine."""
    command = [python, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config)]
    if rendezvous is not None:
        command += [
            "--num_machines", str(rendezvous.num_nodes),
            "--machine_rank", str(rendezvous.node_rank),
            "--main_process_ip", rendezvous.main_host,
            "--main_process_port", str(rendezvous.port),
        ]  # fmt: skip
    elif port is not None:
        command += ["--main_process_port", str(port)]
    return [*command, "-m", module, *module_args]
