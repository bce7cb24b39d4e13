"""The library warnings the ranks silence (launcher/ranks/quiet.py), and only those."""

from __future__ import annotations

import subprocess
import sys
import warnings

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


BITSANDBYTES_KERNEL_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"


def rank_start_output(quiet: bool) -> str:
    """What a rank prints when it starts as ``launcher.ranks.entry`` does: the entry module, then
    (or not) the quieting, then the Trainer's imports (transformers, peft, bitsandbytes)."""
    code = (
        "import launcher.ranks.entry\n"
        "from launcher.ranks.quiet import quiet_library_noise\n"
        f"{'quiet_library_noise()' if quiet else ''}\n"
        "import launcher.ranks.heartbeat, bitsandbytes\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout + done.stderr


@pytest.mark.process
def test_bitsandbytes_kernel_warning_is_silenced_in_a_rank() -> None:
    """bitsandbytes warns about an optional hub kernel on CPUs with AVX512-BF16, in every run.
    The entry module must not import it before the rank quiets it."""
    if BITSANDBYTES_KERNEL_WARNING not in rank_start_output(quiet=False):
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes does not look for the kernel")
    assert BITSANDBYTES_KERNEL_WARNING not in rank_start_output(quiet=True)
