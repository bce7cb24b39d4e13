"""What a tracker run already holds (launcher/ranks/tracker_history.py): MLflow's store asked
through its client; W&B's transaction logs read as W&B writes them (the e2e test reads real ones,
tests/e2e/test_experiment_trackers.py). In process."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from launcher.ranks.tracker_history import (
    BLOCK,
    mlflow_key,
    mlflow_steps,
    wandb_key,
    wandb_records,
    wandb_steps,
)


def test_mlflow_steps_are_the_last_step_of_each_metric(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    assert mlflow_steps(uri, run_id) == {}
    for step in (1, 2, 3):
        client.log_metric(run_id, "loss", 1.0 / step, step=step)
    client.log_metric(run_id, "eval_loss", 0.5, step=2)
    client.log_metric(run_id, "loss", 9.0, step=2)  # logged late, at an earlier step
    assert mlflow_steps(uri, run_id) == {"loss": 3, "eval_loss": 2}


def wandb_log(records: list[bytes], cut: int = 0) -> bytes:
    """A W&B transaction log holding ``records`` (LevelDB's log format, as wandb-core writes it;
    ``cut``: bytes lost at the end, as when the writer was killed)."""
    data = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, 0))
    for record in records:
        first = True
        while True:
            left = BLOCK - len(data) % BLOCK
            if left < 7:
                data += b"\0" * left
                continue
            chunk, record = record[: left - 7], record[left - 7 :]
            kind = (1 if not record else 2) if first else (4 if not record else 3)
            data += struct.pack("<IHB", zlib.crc32(chunk), len(chunk), kind) + chunk
            first = False
            if not record:
                break
    return bytes(data[: len(data) - cut])


def history(step: int, **values: float) -> bytes:
    from wandb.proto import wandb_internal_pb2 as pb

    items = [pb.HistoryItem(key="train/global_step", value_json=json.dumps(step))]
    items += [pb.HistoryItem(key=k, value_json=json.dumps(v)) for k, v in values.items()]
    items.append(pb.HistoryItem(key="_step", value_json=json.dumps(step - 1)))
    return pb.Record(history=pb.HistoryRecord(item=items)).SerializeToString()


def run_record(run_id: str) -> bytes:
    from wandb.proto import wandb_internal_pb2 as pb

    return pb.Record(run=pb.RunRecord(run_id=run_id)).SerializeToString()


def test_wandb_steps_from_the_transaction_logs_of_every_attempt(tmp_path: Path) -> None:
    """Two attempts of run abc: the first killed mid-record (its last row is lost), the second
    with rows long enough to span blocks. A third folder is another run's; `latest-run` is W&B's
    link to the newest folder."""
    folder = tmp_path / "wandb"
    first, second = folder / "offline-run-1-abc", folder / "offline-run-2-abc"
    other = folder / "offline-run-3-zzz"
    for path in (first, second, other):
        path.mkdir(parents=True)
    rows = [history(step, **{"train/loss": 1.0 / step}) for step in range(1, 6)]
    (first / "run-abc.wandb").write_bytes(wandb_log([run_record("abc"), *rows], cut=3))
    long = {f"train/metric_{i}": float(i) for i in range(3000)}  # ~100 KiB: spans 4 blocks
    second_rows = [
        history(4, **{"train/loss": 0.25}),
        history(6, **long),
        history(7, **{"eval/loss": 1.0}),
    ]
    (second / "run-abc.wandb").write_bytes(wandb_log(second_rows))
    (other / "run-zzz.wandb").write_bytes(wandb_log([history(99, **{"train/loss": 1.0})]))
    (folder / "latest-run").symlink_to(second)

    assert len(list(wandb_records(first / "run-abc.wandb"))) == 5  # the run record + 4 whole rows
    steps = wandb_steps(folder, "abc")
    assert steps["train/loss"] == 4 and steps["eval/loss"] == 7
    assert steps["train/metric_2999"] == 6 and steps["train/global_step"] == 7
    assert "_step" not in steps
    assert wandb_steps(folder, "nothing") == {}
    (folder / "offline-run-4-bad").mkdir()
    (folder / "offline-run-4-bad" / "run-bad.wandb").write_bytes(b"not a W&B log")
    assert wandb_steps(folder, "bad") == {}


def test_metric_names_as_each_tracker_keeps_them() -> None:
    assert wandb_key("loss") == "train/loss" and wandb_key("eval_loss") == "eval/loss"
    assert wandb_key("test_accuracy") == "test/accuracy"
    assert mlflow_key("eval_loss") == "eval_loss" and mlflow_key("a(b)") == "a_b_"
