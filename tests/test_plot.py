"""``launcher plot``: a run's metrics.jsonl drawn as a PNG (read back pixel by pixel with PIL).

A real run's plot is checked in ``test_integration.py``; here the metrics are written by hand, so
the curves' shapes are known: a falling loss, a warm-up then decay of the learning rate.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher.contract import RunLayout
from launcher.plot import (
    EVAL_COLOUR,
    LEARNING_RATE_COLOUR,
    THROUGHPUT_COLOUR,
    TRAIN_COLOUR,
    plot_metrics,
    read_metrics,
)

HEAVY_MODULES = {"torch", "transformers", "deepspeed", "bitsandbytes", "submitit"}


def write_metrics(run_dir: Path, steps: int = 20, evals: bool = True) -> None:
    """What MetricsLog writes: training logs with throughput, eval logs, the final summary."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, steps + 1):
        rate = 1e-3 * min(step / 5, (steps - step + 1) / (steps - 4))
        lines.append(
            {
                "step": step,
                "epoch": step / steps,
                "loss": 5.0 - 3.0 * step / steps,
                "learning_rate": rate,
                "samples_per_second": 40.0 + step,
                "tokens_per_second": 2500.0 + 30 * step,
            }
        )
        if evals and step % 5 == 0:
            lines.append({"step": step, "eval_loss": 5.2 - 3.0 * step / steps})
    lines.append({"step": steps, "train_runtime": 12.0, "train_loss": 3.5})
    text = "\n".join(json.dumps(line) for line in lines) + "\n"
    (run_dir / "metrics.jsonl").write_text(text)


def colour_pixels(image: Image.Image, colour: str, top: int, bottom: int) -> list[tuple[int, int]]:
    """(x, y) of the pixels of exactly ``colour`` between rows ``top`` and ``bottom``."""
    want = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    pixels = np.asarray(image.convert("RGB"))[top:bottom]
    ys, xs = np.nonzero((pixels == want).all(axis=2))
    return [(int(x), int(y) + top) for x, y in zip(xs, ys, strict=True)]


def panels(image: Image.Image) -> list[tuple[int, int]]:
    """Row ranges of the three stacked panels, found from their black frames: the rows where
    most pixels are black are the top and bottom edges of each panel."""
    pixels = np.asarray(image.convert("RGB"))
    black = (pixels == 0).all(axis=2).sum(axis=1)
    edges = [int(y) for y in np.nonzero(black > 0.6 * image.width)[0]]
    groups = [y for i, y in enumerate(edges) if i == 0 or y > edges[i - 1] + 1]
    assert len(groups) == 6, f"expected 3 framed panels, found edges at {groups}"
    return [(groups[i] + 2, groups[i + 1]) for i in (0, 2, 4)]


def drawn_across(pixels: list[tuple[int, int]], width: int) -> bool:
    """A curve over many steps spans most of the width; a legend sample alone is ~30 px wide."""
    xs = [x for x, _ in pixels]
    return bool(xs) and max(xs) - min(xs) > 0.6 * width


def test_plot_has_the_asked_size_and_every_curve_in_its_panel(tmp_path: Path) -> None:
    write_metrics(tmp_path / "run")
    output = plot_metrics(read_metrics(RunLayout(tmp_path / "run")), tmp_path / "out.png")

    image = Image.open(output)
    assert image.format == "PNG"
    assert image.size == (1200, 900)
    loss, rate, speed = panels(image)
    train = colour_pixels(image, TRAIN_COLOUR, *loss)
    assert drawn_across(train, image.width)
    assert drawn_across(colour_pixels(image, EVAL_COLOUR, *loss), image.width)
    assert drawn_across(colour_pixels(image, LEARNING_RATE_COLOUR, *rate), image.width)
    assert drawn_across(colour_pixels(image, THROUGHPUT_COLOUR, *speed), image.width)
    # Each colour stays in its own panel.
    assert not colour_pixels(image, LEARNING_RATE_COLOUR, *loss)
    assert not colour_pixels(image, THROUGHPUT_COLOUR, *rate)
    # The loss falls: its pixels sit lower in the image (larger y) on the left than on the right.
    left = [y for x, y in train if x < min(x for x, _ in train) + 50]
    right = [y for x, y in train if x > max(x for x, _ in train) - 50]
    assert sum(left) / len(left) < sum(right) / len(right) - 100


def test_plot_size_is_what_is_asked(tmp_path: Path) -> None:
    write_metrics(tmp_path / "run", evals=False)
    metrics = read_metrics(RunLayout(tmp_path / "run"))
    output = plot_metrics(metrics, tmp_path / "small.png", size=(640, 480))

    image = Image.open(output)
    assert image.size == (640, 480)
    assert not colour_pixels(image, EVAL_COLOUR, 0, image.height)  # no eval logged, none drawn
    assert drawn_across(colour_pixels(image, TRAIN_COLOUR, *panels(image)[0]), image.width)


def test_resumed_steps_keep_the_later_value_and_a_cut_line_is_skipped(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write_metrics(run_dir, steps=6)
    with open(run_dir / "metrics.jsonl", "a") as stream:
        stream.write(json.dumps({"step": 4, "loss": 9.5, "learning_rate": 1e-4}) + "\n")
        stream.write('{"step": 5, "loss": 2.')  # killed mid-write

    metrics = read_metrics(RunLayout(run_dir))
    steps, losses = metrics.loss.xy()
    assert steps == [1, 2, 3, 4, 5, 6]
    assert losses[3] == 9.5
    assert metrics.unreadable_lines == 1


def run_plot(*args: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *flags, "-m", "launcher", "plot", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.process
def test_cli_writes_the_default_file_and_imports_no_torch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run dir"
    write_metrics(run_dir)
    result = run_plot(str(run_dir), flags=("-X", "importtime"))

    assert result.returncode == 0, result.stderr[-3000:]
    output = run_dir / "metrics.png"
    assert result.stdout.strip() == (
        f"plot: steps 1-20 (loss, eval loss, learning rate, tokens/s) -> {output}"
    )
    assert Image.open(output).size == (1200, 900)
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert {"launcher", "matplotlib"} <= imported, "the importtime output was not parsed"
    assert not imported & HEAVY_MODULES, sorted(imported & HEAVY_MODULES)


@pytest.mark.process
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"metrics\.jsonl does not exist: rank 0 writes it at the first logging step"),
        ("", r"holds no loss yet \(0 line\(s\)\)"),
        ('{"step": 0, "train_runtime": 1.0}\n', r"holds no loss yet \(1 line\(s\)\)"),
    ],
)
def test_nothing_to_draw_is_a_clear_error_with_exit_code_2(
    tmp_path: Path, content: str | None, message: str
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if content is not None:
        (run_dir / "metrics.jsonl").write_text(content)
    result = run_plot(str(run_dir), "-o", str(tmp_path / "x.png"))

    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.process
def test_a_missing_run_dir_is_named(tmp_path: Path) -> None:
    result = run_plot(str(tmp_path / "nope"))
    assert result.returncode == 2
    assert f"error: {tmp_path / 'nope'} is not a folder" in result.stderr


def test_a_classification_run_shows_its_eval_scores_beside_the_loss(tmp_path: Path) -> None:
    """eval accuracy and F1 (classification) on the loss panel's right axis, in their colours."""
    from launcher.plot import SCORE_COLOURS, describe

    run_dir = tmp_path / "run"
    write_metrics(run_dir)
    with open(run_dir / "metrics.jsonl", "a") as stream:
        for step in (5, 10, 15, 20):
            score = {"step": step, "eval_accuracy": 0.5 + step / 50, "eval_f1": 0.4 + step / 50}
            stream.write(json.dumps(score) + "\n")
    metrics = read_metrics(RunLayout(run_dir))
    assert sorted(metrics.scores) == ["eval_accuracy", "eval_f1"]
    assert describe(metrics).endswith("tokens/s, eval accuracy, eval f1)")
    image = Image.open(plot_metrics(metrics, tmp_path / "scores.png"))
    loss, rate, _ = panels(image)
    for colour in SCORE_COLOURS[:2]:
        assert drawn_across(colour_pixels(image, colour, *loss), image.width)
        assert not colour_pixels(image, colour, *rate)
