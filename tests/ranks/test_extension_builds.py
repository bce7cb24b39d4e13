"""A JIT build of a DeepSpeed op killed midway must not hang the next run (ranks/extension_builds.py).

The ranks load the ops DeepSpeed builds on first use under a guard. Here children load, in an
extensions folder of their own (``TORCH_EXTENSIONS_DIR``), an op whose ``load`` takes torch's own
build lock (``FileBaton``, as ``torch.utils.cpp_extension.load`` does) without compiling anything;
a child that hangs on the lock fails the test at its timeout instead of hanging the suite. The real
DeepSpeed op is then loaded the way a rank does, and DeepSpeed's own loading must not touch the lock.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.ranks.extension_builds import ops_deepspeed_builds

pytestmark = pytest.mark.process

OP = "launcher_test_op"
LOAD_AN_OP = f"""
from torch.utils.cpp_extension import FileBaton
from launcher.ranks.extension_builds import build_folder, load_without_stale_lock

class Builder:  # loads as torch's JIT does: the build lock taken while ninja would run
    name = "{OP}"
    def load(self, verbose=False):
        baton = FileBaton(str(build_folder(self.name) / "lock"))
        if baton.try_acquire():
            baton.release()
        else:
            baton.wait()

load_without_stale_lock(Builder())
print("loaded")
"""
LOAD_DEEPSPEEDS_OP = """
from torch.utils import cpp_extension
from launcher.ranks.extension_builds import load_deepspeed_ops
load_deepspeed_ops(on_cuda=False, offload_optimizer=False)

def no_lock(self):
    raise AssertionError("DeepSpeed took the build lock after the rank loaded its op")

cpp_extension.FileBaton.try_acquire = cpp_extension.FileBaton.wait = no_lock
from deepspeed.comm.torch import build_shm_op
assert build_shm_op() is not None
print("loaded")
"""


def start(
    script: str, extensions: Path | None, more_env: dict[str, str] | None = None
) -> subprocess.Popen:
    env = {**os.environ, **(more_env or {})}
    if extensions is not None:
        env["TORCH_EXTENSIONS_DIR"] = str(extensions)
    return subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(child: subprocess.Popen) -> str:
    try:
        output, _ = child.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        child.kill()
        raise AssertionError(
            "loading the op still waits after 300 s: the lock was not handled"
        ) from None
    assert child.returncode == 0, output[-3000:]
    assert "loaded" in output, output[-3000:]
    return output


def test_the_ops_deepspeed_builds_in_a_rank() -> None:
    assert ops_deepspeed_builds(on_cuda=False, offload_optimizer=False) == ["ShareMemCommBuilder"]
    assert ops_deepspeed_builds(on_cuda=True, offload_optimizer=False) == []
    assert ops_deepspeed_builds(on_cuda=True, offload_optimizer=True) == ["CPUAdamBuilder"]


def test_a_lock_left_by_a_killed_build_is_removed_and_a_live_build_is_waited_for(
    tmp_path: Path,
) -> None:
    folder = tmp_path / OP  # torch builds in TORCH_EXTENSIONS_DIR/NAME
    folder.mkdir()
    # 1. A killed build left its lock: the next rank removes it, says so, and loads the op.
    (folder / "lock").touch()
    output = finish(start(LOAD_AN_OP, tmp_path))
    assert f"removed {folder / 'lock'}: a build of DeepSpeed's {OP} op was killed" in output
    assert not (folder / "lock").exists()

    # 2. A rank that is building now (it holds the guard) keeps its lock: the next one waits.
    with open(tmp_path / f".{OP}.launcher-guard", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        (folder / "lock").touch()
        waiting = start(LOAD_AN_OP, tmp_path)
        time.sleep(3)
        assert waiting.poll() is None, "the op was loaded while another rank was building it"
        assert (folder / "lock").exists()
        (
            folder / "lock"
        ).unlink()  # the build finishes: torch removes its lock, then the flock goes
    assert "removed" not in finish(waiting)


def test_deepspeed_finds_its_op_loaded_and_takes_no_lock() -> None:
    """The real op, in this machine's extensions folder (built once, as in a first DeepSpeed run)."""
    finish(start(LOAD_DEEPSPEEDS_OP, None))


JOIN_AS_A_RANK = """
from launcher.ranks.entry import join_process_group
from launcher.recipe.schema import Recipe

recipe = Recipe(
    name="x", task="sft", model={"architecture": "mistral"},
    distributed={"strategy": "deepspeed", "zero_stage": 2},
)
print("joined", join_process_group(recipe).distributed_type)
print("loaded")
"""


def test_a_rank_joins_its_process_group_past_a_lock_a_killed_build_left(tmp_path: Path) -> None:
    """As the rank starts under DeepSpeed: accelerate's state calls deepspeed.init_distributed,
    which loads the shared-memory op; the rank loads it first, past the stale lock (a resumed
    run once hung right there, in CI, after a kill during that load)."""
    import shutil

    from launcher.ranks.extension_builds import build_folder

    finish(start(LOAD_DEEPSPEEDS_OP, None))  # built once in this machine's folder
    copy = tmp_path / "deepspeed_shm_comm"
    shutil.copytree(build_folder("deepspeed_shm_comm"), copy)
    (copy / "lock").touch()
    env = {
        "ACCELERATE_USE_DEEPSPEED": "true", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0",
        "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1",
    }  # fmt: skip
    output = finish(start(JOIN_AS_A_RANK, tmp_path, env))
    assert f"removed {copy / 'lock'}" in output and "joined DistributedType.DEEPSPEED" in output
