"""The local backend (launcher/backends/local.py): what reaches the ranks when the launcher stops.

A real Ctrl-C of a training run, continued to the uninterrupted weights, is
tests/e2e/test_integration.py::test_a_graceful_stop_saves_and_continues_to_the_same_weights.
"""

from __future__ import annotations

import signal

from launcher.backends.local import Terminated, signal_to_pass_on


def test_the_ranks_get_the_signal_the_launcher_got() -> None:
    """Ctrl-C reaches the ranks (and the report) as SIGINT, `kill` as SIGTERM."""
    assert signal_to_pass_on(KeyboardInterrupt()) is signal.SIGINT
    assert signal_to_pass_on(Terminated()) is signal.SIGTERM
