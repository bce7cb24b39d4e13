"""The library warnings the ranks silence (launcher/ranks/quiet.py), and only those."""

from __future__ import annotations

import warnings

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
