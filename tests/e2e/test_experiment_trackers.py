"""W&B (offline) and MLflow through a real run that is SIGKILLed and resumed: one tracker run
across both attempts, every step in it once, and no secret in any file of the run.

The run is killed once its trackers hold steps after its newest checkpoint, which the resumed
attempt trains again. MLflow's store is read with MLflow's client; W&B's offline runs with the
launcher's reader of W&B's transaction logs (launcher/ranks/tracker_history.py).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest
from conftest import launcher, metrics, start_launcher
from run_scenarios import rank_log_since

from launcher.ranks.tracker_history import mlflow_steps, wandb_records, wandb_steps

pytestmark = pytest.mark.integration
pytest_plugins = ["shared_runs"]

# SFT, whose resume is bit-exact (test_fault_injection.py): the steps trained again are the same.
# Its smoke steps take milliseconds: 20 of them between checkpoints leave time to kill the run
# after W&B wrote down a step past the first checkpoint, and before the second.
STEPS, EVERY = 60, 20
ARGS = [
    "sft-mistral",
    "--smoke",
    f"smoke.max_steps={STEPS}",
    f"smoke.checkpoint_every={EVERY}",
    "training.report_to=[wandb,mlflow]",
    "tracking.tags=[smoke,e2e]",
]


def test_one_tracker_run_across_a_kill_and_its_resume(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb.proto.wandb_internal_pb2  # noqa: F401  (imported now, not while polling)
    from mlflow import MlflowClient
    from shared_runs import kill_everything  # the plugin, once pytest loaded it

    for name in list(os.environ):  # the developer's own tracker settings stay out
        if name.startswith(("WANDB_", "MLFLOW_")):
            monkeypatch.delenv(name)
    key, token = secrets.token_hex(20), secrets.token_hex(16)
    monkeypatch.setenv("WANDB_MODE", "offline")
    # W&B writes down what it was sent every 15 s: a run killed sooner would leave no W&B steps,
    # and so none to send twice. Every 20 ms, the killed attempt leaves its steps behind.
    monkeypatch.setenv("WANDB__TRANSACTION_LOG_FLUSH_INTERVAL", "0.02")
    monkeypatch.setenv("WANDB_API_KEY", key)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.setenv("LAUNCHER_CACHE", str(workdir / "cache"))
    run_dir = workdir / "run"
    uri = f"sqlite:///{run_dir / 'mlflow' / 'mlflow.db'}"

    # Attempt 1: SIGKILLed once its first checkpoint is complete and W&B wrote down a later step.
    process = start_launcher("run", *ARGS, "--run-dir", str(run_dir), cwd=workdir)
    complete = run_dir / "checkpoints" / f"checkpoint-{EVERY}" / "launcher-complete.json"
    deadline = time.monotonic() + 600
    try:
        while not complete.exists() or wandb_steps_of(run_dir).get("train/loss", 0) <= EVERY:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, f"no step after checkpoint-{EVERY} in 600 s"
            time.sleep(0.01)
    finally:
        kill_everything(process)
    first = json.loads((run_dir / "tracking.json").read_text())
    wandb_id, mlflow_id = first["wandb"]["run_id"], first["mlflow"]["run_id"]
    # The trackers hold steps that the resume trains again (the case this test is for): W&B
    # always; MLflow, which logs asynchronously, when its queue reached the store before the
    # kill, and every step up to the checkpoint in any case (the launcher flushes it at saves).
    assert not (
        run_dir / "checkpoints" / f"checkpoint-{2 * EVERY}" / "launcher-complete.json"
    ).exists()
    assert wandb_steps(run_dir / "wandb", wandb_id)["train/loss"] > EVERY
    assert mlflow_steps(uri, mlflow_id)["loss"] >= EVERY

    offset = (run_dir / "logs" / "rank-0.log").stat().st_size
    launcher("run", *ARGS, "--run-dir", str(run_dir), cwd=workdir)
    log = rank_log_since(run_dir, 0, offset)
    assert f"resuming from {complete.parent}" in log, log[-3000:]
    assert json.loads((run_dir / "tracking.json").read_text()) == first
    assert f"trackers: W&B run {wandb_id} (sft-mistral, offline), MLflow run {mlflow_id}" in log

    # metrics.jsonl has the steps trained twice (bit-exact: the same losses); the trackers once.
    losses: dict[int, set[float]] = {}
    for record in metrics(run_dir):
        if "loss" in record:
            losses.setdefault(record["step"], set()).add(record["loss"])
    assert sorted(losses) == list(range(1, STEPS + 1))
    assert all(len(values) == 1 for values in losses.values()), losses
    expected = {step: values.pop() for step, values in losses.items()}

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sft-mistral")  # the recipe's name
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [mlflow_id]
    assert runs[0].info.status == "FINISHED" and runs[0].info.run_name == "run"
    assert {"smoke", "e2e"} <= set(runs[0].data.tags)
    history = client.get_metric_history(mlflow_id, "loss")
    assert sorted(point.step for point in history) == list(range(1, STEPS + 1))
    assert {point.step: point.value for point in history} == pytest.approx(expected)

    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(folders) == 2, folders  # one per attempt, both of the one run
    steps = []
    for folder in folders:
        assert folder.name.endswith(f"-{wandb_id}")
        for record in wandb_records(folder / f"run-{wandb_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                assert record.run.run_id == wandb_id and record.run.project == "sft-mistral"
                assert list(record.run.tags) == ["smoke", "e2e"]
            elif kind == "history":
                row = {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
                if "train/loss" in row:
                    steps.append(row["train/global_step"])
                    assert row["train/loss"] == pytest.approx(expected[row["train/global_step"]])
    assert sorted(steps) == list(range(1, STEPS + 1)), steps

    # No secret anywhere in the run directory: logs, tracking.json, W&B's and MLflow's files.
    for path in run_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert key.encode() not in content and token.encode() not in content, path


def wandb_steps_of(run_dir: Path) -> dict[str, int]:
    """What W&B wrote down so far of the run in ``run_dir`` ({} before it has a W&B run)."""
    try:
        run_id = json.loads((run_dir / "tracking.json").read_text())["wandb"]["run_id"]
    except FileNotFoundError:
        return {}
    return wandb_steps(run_dir / "wandb", run_id)
