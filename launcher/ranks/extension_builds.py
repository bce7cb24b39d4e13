"""DeepSpeed's C++ ops that are built on first use, loaded so that a killed build cannot hang a run.

DeepSpeed compiles some ops with torch's JIT (``torch.utils.cpp_extension.load``) into torch's
extensions folder: on CPU its shared-memory collectives, under optimizer offload its CPU Adam.
Every process that loads such an op first creates a ``lock`` file in the op's build folder (torch's
``FileBaton``) and removes it after running ninja, even when nothing needs rebuilding. A process
killed in that window (SIGKILL, a preempted node, a second Ctrl-C) leaves the file behind, and every
later process that loads the op waits for it to vanish, forever and without a word: the resumed run
hangs until its time limit (seen in our fault injection, which kills ranks at random moments).

So each rank loads these ops itself before DeepSpeed does, one process at a time per op under an
``flock`` that the kernel releases when its holder dies. While it holds that, a ``lock`` file can
only be one that a killed process left (every rank of the launcher loads under the same flock), so
it is removed, saying so. DeepSpeed then finds the op loaded (its builders cache loaded ops) and
takes no lock of its own. (A program outside the launcher building the same op at that very moment
would lose its lock: its build would still finish.)
"""

from __future__ import annotations

import fcntl
from pathlib import Path


def ops_deepspeed_builds(on_cuda: bool, offload_optimizer: bool) -> list[str]:
    """The op builders DeepSpeed will load in this rank (the names its accelerator knows)."""
    names = [] if on_cuda else ["ShareMemCommBuilder"]
    if offload_optimizer:
        names.append("CPUAdamBuilder")
    return names


def build_folder(op_name: str) -> Path:
    """Where torch's JIT builds ``op_name`` (``TORCH_EXTENSIONS_DIR`` or its default)."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(op_name, verbose=False))


def load_without_stale_lock(builder, log=print) -> None:  # type: ignore[no-untyped-def]
    """Load ``builder``'s op with the build folder's flock held, removing a stale ``lock`` first."""
    folder = build_folder(builder.name)
    with open(folder.parent / f".{builder.name}.launcher-guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # the next rank waits here; released if we die
        stale = folder / "lock"
        if stale.exists():
            stale.unlink(missing_ok=True)
            log(
                f"[launcher] removed {stale}: a build of DeepSpeed's {builder.name} op was killed "
                "midway and left it; torch would have waited for it forever"
            )
        builder.load(verbose=False)


def load_deepspeed_ops(on_cuda: bool, offload_optimizer: bool, log=print) -> None:  # type: ignore[no-untyped-def]
    """Load the ops DeepSpeed JIT-builds in this rank, safely (module docstring)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    for name in ops_deepspeed_builds(on_cuda, offload_optimizer):
        builder = get_accelerator().create_op_builder(name)
        if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
            continue  # DeepSpeed will not load it either
        load_without_stale_lock(builder, log)
