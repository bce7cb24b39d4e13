"""Draw a run's training curves from its ``metrics.jsonl`` into one PNG.

    launcher plot runs/sft-mistral-smoke                 # -> runs/sft-mistral-smoke/metrics.png
    launcher plot runs/sft-mistral-smoke -o loss.png

Three panels over optimizer steps: training and eval loss, learning rate, and throughput (tokens
per second where the run counted tokens, else samples per second), as rank 0 measured them between
two logs (``ranks/callbacks.py``). A run that resumed logs some steps twice; the later line wins,
as it belongs to the attempt whose weights went on.

Only matplotlib's Agg canvas is used (no pyplot, no display), and nothing imports torch: this runs
on a login node in a second or two, also while the run is still training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from launcher.contract import RunLayout
from launcher.errors import LauncherError
from launcher.outputs import output_file

# Fixed colours, so a reader (and the tests) can tell the series apart in any panel.
TRAIN_COLOUR = "#1f77b4"
EVAL_COLOUR = "#ff7f0e"
LEARNING_RATE_COLOUR = "#2ca02c"
THROUGHPUT_COLOUR = "#d62728"
SCORE_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf")  # eval accuracy, f1, ...
# Evaluation scores between 0 and 1 (classification), drawn on the loss panel's right axis.
SCORES = ("eval_accuracy", "eval_f1", "eval_precision", "eval_recall")
DEFAULT_SIZE = (1200, 900)  # pixels
DPI = 100


class PlotError(LauncherError):
    exit_code = 2


@dataclass
class Series:
    """One curve: the value at each step, the last logged value winning."""

    points: dict[int, float] = field(default_factory=dict)

    def add(self, step: int, value: object) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.points[step] = float(value)

    def xy(self) -> tuple[list[int], list[float]]:
        steps = sorted(self.points)
        return steps, [self.points[s] for s in steps]

    def __bool__(self) -> bool:
        return bool(self.points)


@dataclass
class Metrics:
    loss: Series = field(default_factory=Series)
    eval_loss: Series = field(default_factory=Series)
    learning_rate: Series = field(default_factory=Series)
    tokens_per_second: Series = field(default_factory=Series)
    samples_per_second: Series = field(default_factory=Series)
    scores: dict[str, Series] = field(default_factory=dict)  # SCORES that were logged
    unreadable_lines: int = 0


def plot_run(run_dir: Path, output: Path | None = None) -> int:
    """``launcher plot RUN_DIR [-o PNG]``: the run's curves as one image (default
    ``RUN_DIR/metrics.png``)."""
    layout = RunLayout(Path(run_dir))
    metrics = read_metrics(layout)  # first: no folder is made for a run that is not there
    output = output_file(Path(output) if output else layout.root / "metrics.png", "the plot")
    plot_metrics(metrics, output, title=layout.root.name)
    print(f"plot: {describe(metrics)} -> {output}")
    return 0


def read_metrics(layout: RunLayout) -> Metrics:
    """The curves of ``metrics.jsonl``; a clear error when there is nothing to draw."""
    path = layout.metrics_file
    if not layout.root.is_dir():
        raise PlotError(f"{layout.root} is not a folder; pass a run directory (runs/NAME).")
    if not path.is_file():
        raise PlotError(
            f"{path} does not exist: rank 0 writes it at the first logging step. Has the run "
            f"started? (`launcher status {layout.root}` says)"
        )
    metrics = Metrics()
    lines = path.read_text(encoding="utf-8").splitlines()
    for line in lines:
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            metrics.unreadable_lines += 1  # e.g. a last line cut short by a kill
            continue
        for name in ("loss", "eval_loss", "learning_rate", "tokens_per_second"):
            getattr(metrics, name).add(step, record.get(name))
        metrics.samples_per_second.add(step, record.get("samples_per_second"))
        for name in SCORES:
            if name in record:
                metrics.scores.setdefault(name, Series()).add(step, record[name])
    if not metrics.loss and not metrics.eval_loss:
        raise PlotError(
            f"{path} holds no loss yet ({len(lines)} line(s)): nothing "
            "to draw. Plot again after the first logging step (training.logging_steps)."
        )
    return metrics


def describe(metrics: Metrics) -> str:
    """E.g. '6 steps (loss, eval loss, learning rate, tokens/s)'."""
    steps = {*metrics.loss.points, *metrics.eval_loss.points}
    drawn = [
        name
        for name, series in (
            ("loss", metrics.loss),
            ("eval loss", metrics.eval_loss),
            ("learning rate", metrics.learning_rate),
            ("tokens/s", metrics.tokens_per_second),
        )
        if series
    ]
    if not metrics.tokens_per_second and metrics.samples_per_second:
        drawn.append("samples/s")
    drawn += [name.replace("_", " ") for name, series in metrics.scores.items() if series]
    text = f"steps {min(steps)}-{max(steps)} ({', '.join(drawn)})"
    if metrics.unreadable_lines:
        text += f", {metrics.unreadable_lines} unreadable line(s) skipped"
    return text


def plot_metrics(
    metrics: Metrics, output: Path, title: str = "", size: tuple[int, int] = DEFAULT_SIZE
) -> Path:
    """Write the three panels to ``output`` as a PNG of exactly ``size`` pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    loss_axes, rate_axes, speed_axes = figure.subplots(3, 1, sharex=True)
    if title:
        figure.suptitle(title)

    draw(loss_axes, metrics.loss, TRAIN_COLOUR, "training loss")
    draw(loss_axes, metrics.eval_loss, EVAL_COLOUR, "eval loss", marker="o")
    loss_axes.set_ylabel("loss")
    handles, labels = loss_axes.get_legend_handles_labels()
    if any(metrics.scores.values()):
        score_axes = loss_axes.twinx()
        for (name, series), colour in zip(metrics.scores.items(), SCORE_COLOURS, strict=False):
            draw(score_axes, series, colour, name.replace("_", " "), marker="s")
        score_axes.set_ylabel("eval score")
        more_handles, more_labels = score_axes.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    loss_axes.legend(handles, labels, loc="best")

    draw(rate_axes, metrics.learning_rate, LEARNING_RATE_COLOUR, "learning rate")
    rate_axes.set_ylabel("learning rate")
    rate_axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))

    if metrics.tokens_per_second:
        draw(speed_axes, metrics.tokens_per_second, THROUGHPUT_COLOUR, "tokens/s")
        speed_axes.set_ylabel("tokens / s")
    else:
        draw(speed_axes, metrics.samples_per_second, THROUGHPUT_COLOUR, "samples/s")
        speed_axes.set_ylabel("samples / s")
    speed_axes.set_xlabel("optimizer step")

    for axes in (loss_axes, rate_axes, speed_axes):
        axes.grid(True, alpha=0.3)
        if not axes.lines:
            axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)

    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=DPI, format="png")
    return output


def draw(axes, series: Series, colour: str, label: str, marker: str | None = None) -> None:
    if series:
        steps, values = series.xy()
        axes.plot(steps, values, color=colour, label=label, linewidth=2, marker=marker)
