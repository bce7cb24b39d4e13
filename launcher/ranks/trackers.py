"""Experiment trackers (W&B, MLflow): one tracker run per launcher run, however often it resumes.

The Trainer's own ``WandbCallback`` and ``MLflowCallback`` log, on global rank 0. Before the Trainer
is built, :func:`prepare_trackers` gives them what they read from the environment (transformers
5.23, ``integrations/integration_utils.py``):

- the tracker runs' ids, made once by rank 0 and kept in ``RUN/tracking.json``: every attempt (a
  resume, a requeued SLURM job) continues the same W&B run (``WANDB_RUN_ID``,
  ``WANDB_RESUME=allow``) and the same MLflow run (created here, reattached by ``MLFLOW_RUN_ID``);
- project (the MLflow experiment; default the recipe's name), entity, run name and tags from the
  recipe's ``tracking`` section; W&B's files under ``RUN/wandb``, MLflow's store as
  :func:`mlflow_tracking_uri` chooses it. Secrets (``WANDB_API_KEY``, ``MLFLOW_TRACKING_TOKEN``)
  stay in the environment: nothing here writes an environment value into a file.

A resumed attempt trains again the steps between its checkpoint and the moment the last attempt
died. Neither tracker would drop them: MLflow keeps every point it is sent, and the Trainer's W&B
callback logs without a step, so W&B numbers the rows itself. :class:`NewLogsOnly` stands in front
of each tracker's callback and passes a metric on only at a step after the last one that tracker
already has (``launcher.ranks.tracker_history``). Where resume is bit-exact (SFT:
tests/e2e/test_fault_injection.py), what is skipped equals what the tracker has.

wandb and mlflow are imported only when the recipe asks for them, and only in the ranks.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from transformers import TrainerCallback

from launcher.contract import RunLayout
from launcher.errors import LauncherError
from launcher.files import write_text_atomic
from launcher.recipe.schema import Recipe

# The trackers with a run to continue (TensorBoard only adds event files to RUN/tensorboard),
# and the packages each needs in the ranks.
PACKAGES = {"wandb": ("wandb",), "mlflow": ("mlflow",)}
# MLflow's store in the run directory is SQLite (MLflow 3 refuses its file store unless told
# otherwise), which takes SQLAlchemy and Alembic: `mlflow` has them, `mlflow-skinny` does not.
SQLITE_PACKAGES = ("sqlalchemy", "alembic")
WANDB_ID_ALPHABET = string.ascii_lowercase + string.digits
# Every Trainer event but on_log goes to the tracker's callback unchanged.
EVENTS = tuple(
    name for name in vars(TrainerCallback) if name.startswith("on_") and name != "on_log"
)


@dataclass
class Trackers:
    """This run's tracker runs, on rank 0: ``runs`` is what ``RUN/tracking.json`` holds, each
    tracker's ``run_id`` (ids only: never a URI, a key or any other environment value)."""

    layout: RunLayout
    runs: dict[str, dict[str, str]]
    project: str = ""
    mlflow_uri: str | None = None

    def describe(self, environ: MutableMapping[str, str] = os.environ) -> str:
        """One line for rank 0's log: the tracker runs this attempt logs to."""
        parts = []
        if "wandb" in self.runs:
            mode = f", {environ['WANDB_MODE']}" if environ.get("WANDB_MODE") else ""
            parts.append(f"W&B run {self.runs['wandb']['run_id']} ({self.project}{mode})")
        if "mlflow" in self.runs and self.mlflow_uri:
            parts.append(
                f"MLflow run {self.runs['mlflow']['run_id']} (experiment {self.project}, "
                f"{shown(self.mlflow_uri)})"
            )
        return "trackers: " + ", ".join(parts)


def prepare_trackers(
    recipe: Recipe,
    layout: RunLayout,
    is_main: bool,
    environ: MutableMapping[str, str] = os.environ,
) -> Trackers | None:
    """Check that the trackers the recipe asks for can run here (on every rank: each builds
    their callbacks); on global rank 0, read or make the tracker runs and set the environment
    their callbacks read. The runs on rank 0; None elsewhere, or without W&B and MLflow."""
    asked = [name for name in recipe.training.report_to if name in PACKAGES]
    if not asked:
        return None
    uri = mlflow_tracking_uri(recipe, layout, environ) if "mlflow" in asked else None
    local = uri == local_mlflow_uri(layout)
    check_installed(asked, local_store=local)
    if not is_main:
        return None
    path = layout.tracking_file
    runs = json.loads(path.read_text()) if path.exists() else {}
    project = recipe.tracking.project or recipe.name
    if "wandb" in asked:
        wandb = runs.setdefault("wandb", {"run_id": new_wandb_id()})
        environ.update(wandb_environment(recipe, layout, project, wandb["run_id"]))
        # The launcher keeps every rank's output (secrets masked) in logs/; a copy that W&B
        # captured would skip the masking and be uploaded. WANDB_CONSOLE=wrap brings it back.
        environ.setdefault("WANDB_CONSOLE", "off")
    if uri is not None:
        if local:
            layout.mlflow_dir.mkdir(exist_ok=True)
        mlflow = runs.setdefault("mlflow", {})
        mlflow["run_id"] = mlflow_run(
            uri,
            project,
            mlflow.get("run_id"),
            run_name=recipe.tracking.run_name or layout.root.name,
            tags=recipe.tracking.tags,
            # Else MLflow puts artifacts in ./mlruns, wherever the launcher was started.
            artifact_location=(layout.mlflow_dir / "artifacts").as_uri() if local else None,
        )
        environ.update(
            MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=project, MLFLOW_RUN_ID=mlflow["run_id"]
        )
    write_text_atomic(path, json.dumps(runs, indent=2, sort_keys=True) + "\n")
    return Trackers(layout, runs, project, uri)


def check_installed(
    trackers: Iterable[str], local_store: bool, found: Callable[[str], Any] = find_spec
) -> None:
    """LauncherError naming what to install, when a tracker's package is missing here."""
    problems = [
        f"training.report_to asks for {tracker}, which is not installed in {sys.prefix}: "
        f"pip install {tracker}"
        for tracker in trackers
        if any(found(package) is None for package in PACKAGES[tracker])
    ]
    if not problems and local_store and any(found(p) is None for p in SQLITE_PACKAGES):
        problems.append(
            f"MLflow's store in the run directory is SQLite, which needs "
            f"{' and '.join(SQLITE_PACKAGES)} (not installed in {sys.prefix}): pip install mlflow "
            "(mlflow-skinny lacks them), or give a tracking server in "
            "tracking.mlflow_tracking_uri or $MLFLOW_TRACKING_URI"
        )
    if problems:
        raise LauncherError("; ".join(problems))


def mlflow_tracking_uri(
    recipe: Recipe, layout: RunLayout, environ: MutableMapping[str, str]
) -> str:
    """Where MLflow keeps the run: the recipe's ``tracking.mlflow_tracking_uri`` (written down for
    this run, so it wins), else ``$MLFLOW_TRACKING_URI``, else an SQLite store in the run
    directory."""
    given = recipe.tracking.mlflow_tracking_uri or environ.get("MLFLOW_TRACKING_URI")
    return given or local_mlflow_uri(layout)


def local_mlflow_uri(layout: RunLayout) -> str:
    return f"sqlite:///{layout.mlflow_dir / 'mlflow.db'}"


def new_wandb_id() -> str:
    """Eight random lowercase letters and digits, as ``wandb.util.generate_id`` makes them."""
    return "".join(secrets.choice(WANDB_ID_ALPHABET) for _ in range(8))


def wandb_environment(
    recipe: Recipe, layout: RunLayout, project: str, run_id: str
) -> dict[str, str]:
    """What ``wandb.init`` (called by the Trainer's WandbCallback) reads. The run name is the
    Trainer's ``run_name`` (plan/trainer_args.json); WANDB_MODE and the key stay the user's."""
    tracking = recipe.tracking
    environment = {
        "WANDB_PROJECT": project,
        "WANDB_RUN_ID": run_id,
        "WANDB_RESUME": "allow",  # the first attempt creates the run, the others continue it
        "WANDB_DIR": str(layout.root),
    }
    if tracking.entity:
        environment["WANDB_ENTITY"] = tracking.entity
    if tracking.tags:
        environment["WANDB_TAGS"] = ",".join(tracking.tags)
    return environment


def mlflow_run(
    uri: str,
    experiment: str,
    run_id: str | None,
    run_name: str,
    tags: list[str],
    artifact_location: str | None,
) -> str:
    """The id of this run's MLflow run: ``run_id`` once it is checked to be in the store, else a
    new run in ``experiment`` (made if needed), named and tagged from the recipe."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri)
    try:
        if run_id is not None:
            if client.get_run(run_id).info.lifecycle_stage == "deleted":
                raise LauncherError(
                    f"MLflow run {run_id} of this run was deleted in {shown(uri)}: restore it "
                    "(mlflow runs restore), or train in a new run directory"
                )
            return run_id
        found = client.get_experiment_by_name(experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            raise LauncherError(
                f"MLflow experiment {experiment!r} was deleted in {shown(uri)}: restore it "
                "(mlflow experiments restore), or set tracking.project"
            )
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(experiment, artifact_location=artifact_location)
        )
        run = client.create_run(experiment_id, run_name=run_name, tags=dict.fromkeys(tags, ""))
        return run.info.run_id
    except MlflowException as error:
        if run_id is not None and error.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise LauncherError(
                f"MLflow run {run_id} (tracking.json) is not in {shown(uri)}: was the tracking "
                "URI changed? Use the store it was made in, or train in a new run directory"
            ) from None
        raise LauncherError(f"MLflow store {shown(uri)}: {error.message}") from None


def shown(uri: str) -> str:
    """``uri`` without a user name or password in it, to print."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class NewLogsOnly(TrainerCallback):
    """One tracker's callback behind a filter: a log's metrics go on only at a step after the last
    one the tracker has for them (``had``, by the tracker's name of the metric: ``key``). Every
    other event goes to the tracker's callback unchanged."""

    def __init__(
        self,
        tracker: Any,
        had: dict[str, int],
        key: Callable[[str], str],
        after_save: Callable[[], None] | None = None,
    ):
        for event in EVENTS:
            if event != "on_save":  # on_save below passes it on, then flushes
                setattr(self, event, getattr(tracker, event))
        self.tracker, self.had, self.key = tracker, had, key
        self.after_save = after_save

    def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        """The tracker's own ``on_save``, then ``after_save``: what the tracker was sent up to a
        checkpoint is written down with it, so that a kill loses nothing before the checkpoint."""
        result = self.tracker.on_save(args, state, control, **kwargs)
        if self.after_save is not None and state.is_world_process_zero:
            self.after_save()
        return result

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        step = state.global_step
        new = {k: v for k, v in (logs or {}).items() if step > self.had.get(self.key(k), -1)}
        if not new:
            return None
        return self.tracker.on_log(args, state, control, logs=new, **kwargs)


def send_new_logs_only(trainer: Any, trackers: Trackers) -> None:
    """Put :class:`NewLogsOnly` in front of the Trainer's W&B and MLflow callbacks (rank 0),
    each with what its tracker run already holds."""
    from transformers.integrations import MLflowCallback, WandbCallback

    from launcher.ranks import tracker_history as history

    callbacks = trainer.callback_handler.callbacks
    for index, callback in enumerate(callbacks):
        if isinstance(callback, WandbCallback) and "wandb" in trackers.runs:
            run_id = trackers.runs["wandb"]["run_id"]
            had = history.wandb_steps(trackers.layout.wandb_dir, run_id)
            callbacks[index] = NewLogsOnly(callback, had, history.wandb_key)
        elif isinstance(callback, MLflowCallback) and trackers.mlflow_uri is not None:
            had = history.mlflow_steps(trackers.mlflow_uri, trackers.runs["mlflow"]["run_id"])
            callbacks[index] = NewLogsOnly(callback, had, history.mlflow_key, flush_mlflow)


def flush_mlflow() -> None:
    """The Trainer's MLflow callback logs asynchronously (MLflow >= 2.8): wait for what is queued."""
    import mlflow

    if hasattr(mlflow, "flush_async_logging"):
        mlflow.flush_async_logging()
