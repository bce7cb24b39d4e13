"""Experiment trackers (launcher/ranks/trackers.py): one W&B and one MLflow run per launcher run,
their ids made once and reused by every attempt, settings from the recipe, secrets never written,
and no step sent twice after a resume. In process; MLflow's SQLite store is real."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launcher.contract import RunLayout
from launcher.errors import LauncherError
from launcher.ranks.tracker_history import wandb_key
from launcher.ranks.trackers import (
    NewLogsOnly,
    Trackers,
    check_installed,
    mlflow_tracking_uri,
    prepare_trackers,
    send_new_logs_only,
    shown,
)
from launcher.recipe.schema import Recipe

TRACKER_VARIABLES = ("WANDB_", "MLFLOW_")


def recipe(report_to: Any = ("wandb", "mlflow"), **tracking: Any) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "tiny",
            "task": "mlm",
            "training": {"report_to": list(report_to)},
            "tracking": tracking,
        }
    )


@pytest.fixture
def layout(tmp_path: Path) -> RunLayout:
    root = tmp_path / "run dir"  # a space, as in many users' paths
    root.mkdir()
    return RunLayout(root)


def test_one_tracker_run_across_attempts(
    layout: RunLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt makes the W&B id and the MLflow run; a resumed attempt (a new process:
    a fresh environment) gets the same ids back, and MLflow still holds one run. No secret of the
    environment is written anywhere in the run directory."""
    from mlflow import MlflowClient

    key, token = secrets.token_hex(20), secrets.token_hex(16)
    for name in list(os.environ):
        if name.startswith(TRACKER_VARIABLES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    user_env = {"WANDB_API_KEY": key, "MLFLOW_TRACKING_TOKEN": token, "WANDB_MODE": "offline"}
    first_env, second_env = dict(user_env), dict(user_env)
    first = prepare_trackers(recipe(tags=["smoke"]), layout, is_main=True, environ=first_env)
    second = prepare_trackers(recipe(tags=["smoke"]), layout, is_main=True, environ=second_env)

    assert first is not None and second is not None
    assert second_env["WANDB_RUN_ID"] == first_env["WANDB_RUN_ID"]
    assert second_env["MLFLOW_RUN_ID"] == first_env["MLFLOW_RUN_ID"]
    saved = json.loads(layout.tracking_file.read_text())
    assert saved == {
        "wandb": {"run_id": first_env["WANDB_RUN_ID"]},
        "mlflow": {"run_id": first_env["MLFLOW_RUN_ID"]},
    }
    assert len(first_env["WANDB_RUN_ID"]) == 8 and first_env["WANDB_RUN_ID"].isalnum()
    assert second.describe(second_env) == (
        f"trackers: W&B run {first_env['WANDB_RUN_ID']} (tiny, offline), MLflow run "
        f"{first_env['MLFLOW_RUN_ID']} (experiment tiny, {first_env['MLFLOW_TRACKING_URI']})"
    )

    uri = first_env["MLFLOW_TRACKING_URI"]
    assert uri == f"sqlite:///{layout.root / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny")  # the recipe's name: no project given
    assert experiment is not None
    assert experiment.artifact_location == (layout.mlflow_dir / "artifacts").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [first_env["MLFLOW_RUN_ID"]]
    assert runs[0].info.run_name == "run dir"  # the run directory's name, as the Trainer's
    assert runs[0].data.tags["smoke"] == ""

    # Nothing the rank writes holds a secret (the tracker's own store included).
    for path in layout.root.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert key.encode() not in content and token.encode() not in content, path
    # ...nor hands one on: the environment keeps the user's secrets, and only those.
    assert second_env["WANDB_API_KEY"] == key and second_env["MLFLOW_TRACKING_TOKEN"] == token


def test_a_run_missing_from_the_store_is_an_error_not_a_new_run(
    layout: RunLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tracking.json names an MLflow run the store does not have (the store was changed): the
    rank stops with what to do instead of quietly starting a second run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    layout.tracking_file.write_text(json.dumps({"mlflow": {"run_id": "0" * 32}}))
    with pytest.raises(
        LauncherError, match=r"MLflow run 0{32} \(tracking.json\) is not in sqlite:"
    ):
        prepare_trackers(recipe(["mlflow"]), layout, is_main=True, environ={})
    assert json.loads(layout.tracking_file.read_text()) == {"mlflow": {"run_id": "0" * 32}}


def test_environment_from_the_recipe(layout: RunLayout) -> None:
    """Project, entity, tags and the run folder as W&B reads them; the user's WANDB_MODE and
    WANDB_CONSOLE stay; nothing but W&B's variables is set for W&B alone."""
    environ = {"WANDB_MODE": "offline", "WANDB_CONSOLE": "wrap", "WANDB_PROJECT": "elsewhere"}
    wanted = recipe(["wandb"], project="proj", entity="team", tags=["a", "b c"])
    record = prepare_trackers(wanted, layout, is_main=True, environ=environ)
    assert record is not None
    assert environ == {
        "WANDB_MODE": "offline",
        "WANDB_CONSOLE": "wrap",
        "WANDB_PROJECT": "proj",  # the recipe wins over the environment
        "WANDB_ENTITY": "team",
        "WANDB_TAGS": "a,b c",
        "WANDB_RUN_ID": record.runs["wandb"]["run_id"],
        "WANDB_RESUME": "allow",
        "WANDB_DIR": str(layout.root),
    }
    # Without a project, W&B's project is the recipe's name; console capture is off by default.
    environ = {}
    prepare_trackers(recipe(["wandb"]), RunLayout(layout.root), is_main=True, environ=environ)
    assert environ["WANDB_PROJECT"] == "tiny" and environ["WANDB_CONSOLE"] == "off"
    assert "WANDB_ENTITY" not in environ and "WANDB_TAGS" not in environ


def test_only_rank_zero_makes_runs(layout: RunLayout) -> None:
    environ: dict[str, str] = {}
    assert prepare_trackers(recipe(), layout, is_main=False, environ=environ) is None
    assert environ == {} and not layout.tracking_file.exists()
    # TensorBoard alone has no run to keep.
    assert prepare_trackers(recipe(["tensorboard"]), layout, is_main=True, environ={}) is None
    assert not layout.tracking_file.exists()


def test_mlflow_store_precedence(layout: RunLayout) -> None:
    """The recipe's store, else $MLFLOW_TRACKING_URI, else SQLite in the run directory."""
    env = {"MLFLOW_TRACKING_URI": "http://from-env:5000"}
    given = recipe(["mlflow"], mlflow_tracking_uri="http://from-recipe:5000")
    assert mlflow_tracking_uri(given, layout, env) == "http://from-recipe:5000"
    assert mlflow_tracking_uri(recipe(["mlflow"]), layout, env) == "http://from-env:5000"
    local = f"sqlite:///{layout.root}/mlflow/mlflow.db"
    assert mlflow_tracking_uri(recipe(["mlflow"]), layout, {}) == local
    assert shown("https://me:hunter22@mlflow.example.com/x") == "https://mlflow.example.com/x"


def test_a_missing_package_is_named_with_the_pip_command() -> None:
    def absent(*names: str):  # type: ignore[no-untyped-def]
        return lambda package: None if package in names else object()

    with pytest.raises(LauncherError) as error:
        check_installed(["wandb", "mlflow"], local_store=False, found=absent("wandb", "mlflow"))
    message = str(error.value)
    assert "training.report_to asks for wandb, which is not installed" in message
    assert "pip install wandb" in message and "pip install mlflow" in message
    with pytest.raises(LauncherError, match=r"SQLite, which needs sqlalchemy and alembic"):
        check_installed(["mlflow"], local_store=True, found=absent("alembic"))
    check_installed(["mlflow"], local_store=False, found=absent("alembic"))  # a server: fine
    check_installed(["wandb", "mlflow"], local_store=True, found=absent())


class Tracker:
    """A tracker's callback: records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, dict[str, float]]] = []
        self.began = 0

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        self.sent.append((state.global_step, dict(logs)))

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self.began += 1

    def __getattr__(self, name: str):  # every other event: nothing to do
        return lambda *args, **kwargs: None


def log(callback: NewLogsOnly, step: int, **logs: float) -> None:
    callback.on_log(None, SimpleNamespace(global_step=step), None, logs=logs, model=None)


def test_a_resumed_attempt_sends_only_what_the_tracker_lacks() -> None:
    """The last attempt was killed after step 5, with a checkpoint at step 3; the tracker holds
    the losses of steps 1-5 and the evaluation of step 3 (W&B's names). The resumed attempt
    trains steps 4 and 5 again: they are not sent; steps 6 and 7 are, and so are an evaluation
    at step 5 and the final metrics at step 7, which the tracker does not have."""
    tracker = Tracker()
    had = {"train/loss": 5, "train/epoch": 5, "eval/loss": 3}
    callback = NewLogsOnly(tracker, had, wandb_key)
    callback.on_train_begin(None, None, None)  # other events go on unchanged
    for step in range(4, 8):
        log(callback, step, loss=1.0 / step, epoch=step / 10)
    log(callback, 5, eval_loss=0.4)
    log(callback, 7, eval_loss=0.3, train_runtime=12.0)
    assert tracker.began == 1
    assert tracker.sent == [
        (6, {"loss": 1.0 / 6, "epoch": 0.6}),
        (7, {"loss": 1.0 / 7, "epoch": 0.7}),
        (5, {"eval_loss": 0.4}),
        (7, {"eval_loss": 0.3, "train_runtime": 12.0}),
    ]
    # A first attempt (the tracker has nothing) sends everything.
    fresh = Tracker()
    log(NewLogsOnly(fresh, {}, wandb_key), 1, loss=2.0)
    assert fresh.sent == [(1, {"loss": 2.0})]


def test_what_a_tracker_was_sent_is_flushed_at_each_save_on_rank_0() -> None:
    """MLflow logs in the background: at a checkpoint the launcher waits for its queue, so that a
    kill after the checkpoint loses nothing from before it."""
    flushed: list[str] = []
    callback = NewLogsOnly(Tracker(), {}, wandb_key, after_save=lambda: flushed.append("flush"))
    callback.on_save(None, SimpleNamespace(is_world_process_zero=False), None)
    assert flushed == []
    callback.on_save(None, SimpleNamespace(is_world_process_zero=True), None)
    assert flushed == ["flush"]


def test_the_trainers_tracker_callbacks_are_filtered(layout: RunLayout) -> None:
    from transformers.integrations import MLflowCallback, WandbCallback
    from transformers.trainer_callback import DefaultFlowCallback

    wandb = WandbCallback.__new__(WandbCallback)  # not set up: no wandb import needed here
    mlflow = MLflowCallback.__new__(MLflowCallback)
    mlflow._auto_end_run = False  # what its __del__ reads
    flow = DefaultFlowCallback()
    trainer = SimpleNamespace(callback_handler=SimpleNamespace(callbacks=[flow, wandb, mlflow]))
    send_new_logs_only(trainer, Trackers(layout, {"wandb": {"run_id": "x"}}))
    callbacks = trainer.callback_handler.callbacks
    assert callbacks[0] is flow and callbacks[2] is mlflow  # MLflow not asked for: untouched
    assert isinstance(callbacks[1], NewLogsOnly) and callbacks[1].tracker is wandb
    assert callbacks[1].had == {}  # no W&B files yet: a first attempt
    assert callbacks[1].on_train_begin == wandb.on_train_begin
