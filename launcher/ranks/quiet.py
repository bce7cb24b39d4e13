"""Library warnings that tell a user nothing, silenced once, here, in every rank.

Each entry was seen in a real run and says nothing the user can act on: the rank still reports
what matters (the optimizer that really runs, the world it trains in). A ZeRO-3 smoke run printed
the first one 114 times on one rank (DeepSpeed calls the deprecated collectives every step, from
many call sites, so Python's once-per-location rule does not hold it back).
"""

from __future__ import annotations

import logging
import warnings

NOISE: list[tuple[type[Warning], str]] = [
    # torch 2.13 renamed the collectives DeepSpeed 0.19 calls on every step.
    (FutureWarning, r"`torch\.distributed\.\w+` is deprecated"),
    # peft 0.21 asks transformers 5.23 for the old name while it adds adapters.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # bitsandbytes' paged optimizers page only CUDA memory; the launcher's plan says what runs.
    (UserWarning, r"Paged optimizers are not supported on CPU"),
]

# Log records about the machine, not the run, dropped from a library's logger by the start of
# their message.
QUIET_RECORDS: dict[str, tuple[str, ...]] = {
    # bitsandbytes 0.50, imported with transformers' Trainer on a CPU with AVX512-BF16, looks for
    # an optional kernel on the hub and warns "... `pip install kernels`" in every rank of every
    # run, QLoRA or not; it falls back to its own.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
    # DeepSpeed, imported by accelerate in every rank (DDP too), on a machine without a GPU: the
    # rank's own first line already says "CPU".
    "DeepSpeed": ("Setting accelerator to CPU.",),
}


class DropRecords(logging.Filter):
    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def quiet_library_noise() -> None:
    """Install the filters (call once, before the libraries are imported)."""
    for category, message in NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, starts in QUIET_RECORDS.items():
        library_logger = logging.getLogger(name)
        if not any(isinstance(f, DropRecords) for f in library_logger.filters):
            library_logger.addFilter(DropRecords(starts))
