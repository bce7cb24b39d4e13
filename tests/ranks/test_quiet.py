"""The library warnings the ranks silence (launcher/ranks/quiet.py), and only those."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from launcher.ranks.quiet import quiet_library_noise


def test_deprecated_collective_warnings_are_silenced_and_others_are_not() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        for name in ("reduce_scatter_tensor", "all_gather_into_tensor"):
            warnings.warn(
                f"`torch.distributed.{name}` is deprecated. Please use `x` instead.",
                FutureWarning,
                stacklevel=1,
            )
        warnings.warn("`torch.distributed.x` is deprecated", DeprecationWarning, stacklevel=1)
        warnings.warn("something else is deprecated", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [
        "`torch.distributed.x` is deprecated",
        "something else is deprecated",
    ]


# Machine-dependent library noise a rank printed: bitsandbytes on CPUs with AVX512-BF16 (an
# optional hub kernel), DeepSpeed on machines without a GPU.
MACHINE_NOISE = (
    "Failed to load CPU gemm_4bit_forward from kernels-community",
    "Setting accelerator to CPU.",
)


def rank_start_output(quiet: bool) -> str:
    """What a rank prints when it starts as ``launcher.ranks.entry`` does: the entry module, then
    (or not) the quieting, then the libraries (transformers, peft, bitsandbytes, DeepSpeed)."""
    code = (
        "import launcher.ranks.entry\n"
        "from launcher.ranks.quiet import quiet_library_noise\n"
        f"{'quiet_library_noise()' if quiet else ''}\n"
        "import launcher.ranks.heartbeat, bitsandbytes, deepspeed\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


@pytest.mark.process
def test_machine_noise_of_the_libraries_is_silenced_in_a_rank() -> None:
    """Each message seen without the quieting is gone with it. The entry module must not import
    the libraries before the rank quiets them (it did: the heartbeat imported transformers)."""
    seen = [message for message in MACHINE_NOISE if message in rank_start_output(quiet=False)]
    if not seen:
        pytest.skip("this machine has a GPU and no AVX512-BF16: the libraries print neither")
    quieted = rank_start_output(quiet=True)
    assert [message for message in seen if message in quieted] == []


def test_prints_to_log_only_keep_them_in_the_rank_log(tmp_path: Path) -> None:
    from launcher.ranks.logs import prints_to_log_only, rank_log

    log = tmp_path / "rank-0.log"
    shown = io.StringIO()
    with redirect_stdout(shown), rank_log(log):
        print("before")
        with prints_to_log_only():
            print("DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully")
        print("after")
    assert shown.getvalue() == "before\nafter\n"
    assert log.read_text() == (
        "before\nDeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully\nafter\n"
    )
