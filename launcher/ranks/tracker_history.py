"""What a tracker run already holds: for each metric, the last step it has.

A resumed attempt trains again the steps between its checkpoint and the moment the last attempt
died; ``launcher.ranks.trackers.NewLogsOnly`` sends a tracker only the steps it does not have. The
answer comes from the tracker's own store, not from a record of what was sent: MLflow's callback
logs asynchronously, and W&B keeps what it is sent in memory for up to 15 s before writing it
(``x_transaction_log_flush_interval``), so a killed attempt loses its last steps there. A record
of what was sent would skip those steps for good; the store says they are missing.

Metric names are each tracker's own: MLflow's callback replaces some characters, W&B's prefixes
``train/``, ``eval/`` and ``test/`` (:func:`mlflow_key`, :func:`wandb_key`).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# W&B's transaction log (`run-ID.wandb`): a 7-byte header, then LevelDB's log format: 32 KiB
# blocks of chunks, each a 7-byte header (checksum, length, type) and data; a record too long for
# a block is split into FIRST, MIDDLE... LAST chunks. Each record is a protobuf `Record`.
WANDB_HEADER = b":W&B"
BLOCK = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
WANDB_STEP = "train/global_step"  # the x-axis WandbCallback logs with every row


def mlflow_steps(uri: str, run_id: str) -> dict[str, int]:
    """For each metric of MLflow run ``run_id``, the last step in the store."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def wandb_steps(folder: Path, run_id: str) -> dict[str, int]:
    """For each metric of W&B run ``run_id``, the last step (``train/global_step``) in the
    transaction logs its attempts left in ``folder`` (``RUN/wandb``): what ``wandb sync`` uploads
    of an offline run, and what an online run sent the server, as far as it wrote it down."""
    steps: dict[str, int] = {}
    for path in sorted(folder.glob(f"*-{run_id}/run-{run_id}.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") != "history":
                continue
            row = {item.key or "/".join(item.nested_key): item for item in record.history.item}
            if WANDB_STEP not in row:
                continue
            step = int(json.loads(row[WANDB_STEP].value_json))
            for key in row:
                if not key.startswith("_"):  # W&B's own _step, _runtime, _timestamp
                    steps[key] = max(steps.get(key, -1), step)
    return steps


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a W&B transaction log. A log cut short (its attempt was killed) ends at its
    last whole record; a file in another format yields nothing."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if not data.startswith(WANDB_HEADER):
        return
    position, pending = len(WANDB_HEADER) + 3, b""  # + 2-byte magic, 1-byte version
    while position + CHUNK_HEADER.size <= len(data):
        left = BLOCK - position % BLOCK
        if left < CHUNK_HEADER.size:  # no room for a chunk header: the block's end is padding
            position += left
            continue
        _, length, kind = CHUNK_HEADER.unpack_from(data, position)
        chunk = data[position + CHUNK_HEADER.size : position + CHUNK_HEADER.size + length]
        if kind not in (FULL, FIRST, MIDDLE, LAST) or len(chunk) < length:
            return
        position += CHUNK_HEADER.size + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def mlflow_key(key: str) -> str:
    """A Trainer metric's name in MLflow (as ``MLflowCallback.on_log`` sanitizes it)."""
    return re.sub(r"[^0-9A-Za-z_\-\.\ :/]", "_", key)


def wandb_key(key: str) -> str:
    """A Trainer metric's name in W&B's history (``eval_loss`` is ``eval/loss``)."""
    from transformers.integrations.integration_utils import rewrite_logs

    return next(iter(rewrite_logs({key: None})))
