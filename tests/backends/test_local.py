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


def test_a_finished_run_ends_with_what_a_person_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from launcher.backends.local import ending, format_duration
    from launcher.contract import RunLayout

    assert [format_duration(s) for s in (42.4, 185, 7620)] == ["42 s", "3 min 5 s", "2 h 07 min"]
    layout = RunLayout(tmp_path / "run")
    for step in (4, 6):
        folder = layout.checkpoints_dir / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "launcher-complete.json").write_text(json.dumps({"step": step, "files": {}}))
    layout.metrics_file.write_text(
        json.dumps({"step": 6, "loss": 2.345678}) + "\n"
        + json.dumps({"step": 6, "eval_loss": 2.5, "eval_accuracy": 0.87654, "eval_runtime": 3}) + "\n"
    )  # fmt: skip
    layout.result_file.write_text(json.dumps({"global_step": 6, "model_dir": "model"}))
    assert ending(layout).splitlines() == [
        "step:        6, training loss 2.346",
        "eval:        eval_loss 2.5, eval_accuracy 0.8765 (step 6)",
        f"checkpoints: checkpoint-4, checkpoint-6 in {layout.checkpoints_dir}",
        f"model:       {layout.root / 'model'}",
        f"metrics:     {layout.metrics_file} (`launcher plot {layout.root}` draws them)",
    ]
