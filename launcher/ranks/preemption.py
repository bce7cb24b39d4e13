"""Stop on a signal with a complete checkpoint: SLURM's time-limit warning, preemption, Ctrl-C.

SLURM sends ``--signal=USR2@N`` to every process of the job step before the time limit, and SIGTERM
to all of them on preemption (``scontrol requeue``). A signal reaches the ranks at different
moments, so no rank acts on it alone: each notes it, and at every step end the ranks all-reduce the
flag; when any rank saw a signal, all of them save a checkpoint at that same step and stop. Rank 0
then writes ``stopped.json`` so that the node task (which waits for it) knows the save is done.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from launcher.files import write_text_atomic

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class StopOnSignal(TrainerCallback):
    """Turns a signal into "save now, then stop" at the next step end, on every rank at once."""

    def __init__(self, state: Any):
        self.state = state
        self.received: int | None = None
        self.stopped_at: int | None = None
        self.group = flag_group()
        for number in STOP_SIGNALS:
            signal.signal(number, self._note)

    def _note(self, number: int, frame: Any) -> None:
        if self.received is None:
            self.received = number
            print(
                f"[launcher] rank {self.state.process_index}: got {signal.Signals(number).name}; "
                "saving at the end of this step",
                flush=True,
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.any_rank_signalled():
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def any_rank_signalled(self) -> bool:
        import torch
        import torch.distributed as dist

        flag = 1.0 if self.received is not None else 0.0
        if not (dist.is_available() and dist.is_initialized()):
            return bool(flag)
        # A CPU tensor over a gloo group: reading a GPU flag back would stall every step.
        tensor = torch.tensor([flag])
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return bool(tensor.item())

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received else "another rank's signal"


def flag_group() -> Any:
    """The process group the stop flag travels on: the default one when it is gloo (CPU), else a
    gloo group made once by every rank (``new_group`` must be called by all of them, in order)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    if dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def write_stopped(path: Path, step: int, signal_name: str) -> None:
    """Rank 0's word, after the checkpoint of ``step`` is complete, that this attempt stopped."""
    stopped = {"step": step, "signal": signal_name, "time": time.time()}
    write_text_atomic(path, json.dumps(stopped) + "\n")
