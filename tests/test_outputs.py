"""Output paths (``-o``) of plan, export, plot and tokenizer: one clear error, exit 2, before any
work, never a traceback or a success message over nothing written (launcher/outputs.py).

In-process through the real command line (``launcher.cli.main``): the checks run before the work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli

from launcher.outputs import OutputPathError, output_file, output_folder


def refused(code: int, stderr: str, path: Path, words: str) -> None:
    assert code == 2, stderr
    assert stderr.startswith(f"error: -o {path}: {words}"), stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("mine\n")
    return path


def test_plan_output_is_a_folder(tmp_path: Path, a_file: Path) -> None:
    code, out, err = cli("plan", "sft-mistral", "--smoke", "-o", str(a_file))
    refused(code, err, a_file, "this is a file, not a folder for the plan's files")
    assert out == "" and a_file.read_text() == "mine\n"

    code, _, err = cli("plan", "sft-mistral", "--smoke", "-o", "/proc/launcher-plan")
    refused(code, err, Path("/proc/launcher-plan"), "cannot write the plan's files here (")

    code, out, err = cli("plan", "sft-mistral", "--smoke", "-o", str(tmp_path / "new" / "plan"))
    assert code == 0, err
    assert (tmp_path / "new" / "plan" / "deepspeed.json").exists() or any(
        (tmp_path / "new" / "plan").iterdir()
    )


def test_tokenizer_to_a_file_is_refused_before_training(a_file: Path) -> None:
    code, out, err = cli("tokenizer", "mlm-scratch", "--smoke", "-o", str(a_file))
    refused(code, err, a_file, "this is a file, not a folder for the tokenizer")
    assert out == "" and a_file.read_text() == "mine\n"


def test_plot_output_is_a_writable_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    line = {"step": 1, "loss": 2.0, "learning_rate": 1e-4}
    (run_dir / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    code, _, err = cli("plot", str(run_dir), "-o", str(tmp_path))
    refused(code, err, tmp_path, "this is a folder; name the file for the plot")
    code, _, err = cli("plot", str(run_dir), "-o", "/proc/plot.png")
    refused(code, err, Path("/proc/plot.png"), "cannot write the plot here (")
    # A missing run is named as before, and no folder is made for it.
    code, _, err = cli("plot", str(tmp_path / "nope"))
    assert code == 2 and "nope is not a folder" in err and not (tmp_path / "nope").exists()


def test_export_output_is_a_new_or_empty_folder(tmp_path: Path, a_file: Path) -> None:
    with pytest.raises(
        OutputPathError, match="this is a file, not a folder for the exported model"
    ):
        output_folder(a_file, "the exported model", must_be_empty=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").touch()
    with pytest.raises(OutputPathError, match="this folder is not empty; name a new folder"):
        output_folder(tmp_path / "full", "the exported model", must_be_empty=True)
    assert output_folder(tmp_path / "a" / "b", "x") == tmp_path / "a" / "b"


def test_checking_a_file_leaves_nothing_behind(tmp_path: Path, a_file: Path) -> None:
    assert output_file(tmp_path / "sub" / "plot.png", "the plot") == tmp_path / "sub" / "plot.png"
    assert not (tmp_path / "sub" / "plot.png").exists()
    assert output_file(a_file, "the plot") == a_file and a_file.read_text() == "mine\n"
    with pytest.raises(OutputPathError, match="cannot write the plot here"):
        output_file(Path("/proc/self/nope/plot.png"), "the plot")


def test_plan_output_holds_a_command_that_runs_that_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`plan -o DIR`'s command.sh runs the same plan from anywhere: `launcher run` of the same
    recipe, overrides and run directory, from the directory the plan was made in."""
    import shlex
    import sys

    monkeypatch.chdir(tmp_path)
    code, planned, err = cli(
        "plan", "mlm-scratch", "--smoke", "training.learning_rate=1e-4", "-o", "p"
    )
    assert code == 0, err
    script = (tmp_path / "p" / "command.sh").read_text().splitlines()
    assert script[2] == f"cd {shlex.quote(str(tmp_path))}"
    words = shlex.split(script[3])
    run_dir = tmp_path / "runs" / "mlm-scratch-smoke"
    assert words[:5] == ["exec", sys.executable, "-m", "launcher", "run"]
    assert words[6:] == ["training.learning_rate=1e-4", "--smoke", "--run-dir", str(run_dir)]
    code, again, err = cli("plan", *words[5:])  # the same arguments plan the same run
    assert code == 0, err
    assert again.strip() == planned.split("plan files written to")[0].strip()
