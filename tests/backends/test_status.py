"""`launcher status` of a run directory (launcher/backends/jobs.py:status_report), read from the
files a run leaves: its newest metrics, a stop on a signal, a finished model."""

from __future__ import annotations

import json
from pathlib import Path

from launcher.backends.jobs import status_report
from launcher.contract import RunLayout


def write_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_status_shows_the_newest_metrics_and_how_to_continue_a_stopped_run(
    tmp_path: Path,
) -> None:
    layout = RunLayout(tmp_path / "run")
    (layout.root / "logs").mkdir(parents=True)
    write_lines(
        layout.metrics_file,
        [
            {"step": 1, "loss": 5.637706756591797, "learning_rate": 2e-05},
            {"step": 2, "eval_loss": 5.4321, "eval_accuracy": 0.51234, "eval_runtime": 1.2},
            {"step": 3, "loss": 5.123456},
        ],
    )
    (layout.metrics_file.open("a")).write('{"step": 4, "lo')  # a line being written
    layout.stopped_file.write_text(json.dumps({"step": 3, "signal": "SIGINT", "time": 0}))
    report = status_report(layout, None)
    assert "metrics     step 3: loss 5.123" in report
    assert "eval at step 2: eval_loss 5.432, eval_accuracy 0.5123" in report
    assert "eval_runtime" not in report
    assert "stopped     on SIGINT at step 3, with a complete checkpoint; run the same" in report

    # Finished: the model is named inside the run directory, wherever that folder now is.
    layout.result_file.write_text(json.dumps({"global_step": 3, "model_dir": "model"}))
    moved = RunLayout(tmp_path / "run.old-1")
    layout.root.rename(moved.root)
    report = status_report(moved, None)
    assert f"finished    step 3; model in {moved.root / 'model'}" in report
    assert "stopped" not in report


def test_a_failure_names_its_cause_first_and_only_log_folders_that_exist(tmp_path: Path) -> None:
    from launcher.backends.jobs import failure_lines

    layout = RunLayout(tmp_path / "run")
    layout.logs_dir.mkdir(parents=True)
    failures = [
        {"rank": 0, "host": "h", "error": "RuntimeError: Connection closed by peer",
         "traceback_tail": "RuntimeError: Connection closed by peer", "after_rank": 1},
        {"rank": 1, "host": "h", "error": "ValueError: bad",
         "traceback_tail": 'File "x.py", line 1\nValueError: bad'},
    ]  # fmt: skip
    for failure in failures:
        failure["log"] = str(layout.rank_log(failure["rank"]))
        layout.failure_file(failure["rank"]).write_text(json.dumps(failure))
    lines = failure_lines(layout)
    assert lines == [
        "FAILED      rank 1 on h: ValueError: bad",
        '            File "x.py", line 1',  # for status, which shows no output
        "            ValueError: bad",
        f"            log: {layout.rank_log(1)}",
        "stopped     rank 0 on h, after rank 1 failed (a collective lost its peer)",
        f"            log: {layout.rank_log(0)}",
        f"            all logs: {layout.logs_dir}",  # a local run: no slurm/
    ]
    # A local run showed the error as it came: its report does not repeat it.
    assert failure_lines(layout, streamed=True) == [
        "FAILED      rank 1 on h: its error is above",
        *lines[3:],
    ]
