"""Launch overhead: ``launcher run`` against a hand-written TRL script doing the same work.

    python benchmarks/launch_overhead.py              # 3 pairs, 300 steps each (about 3 minutes)
    python benchmarks/launch_overhead.py --quick      # 1 pair, 10 steps

The fixed job is ``recipes/sft-mistral.yaml --smoke`` (tiny Mistral, packed SFT with TRL, paged
AdamW, fp32 on CPU) with ``smoke.max_steps`` steps and a checkpoint every ``max_steps / 3``
(periodic checkpoints and a final model, as the recipe does). The baseline,
benchmarks/handwritten_sft.py, trains the same model config on the same rows with the same
tokenizer and the same SFTConfig values, under ``accelerate launch`` with the plan's accelerate
config. Fairness:

- one untimed launcher run first trains the smoke tokenizer and writes the smoke data; both sides
  then load that tokenizer and those rows (neither trains a tokenizer);
- every run gets empty ``LAUNCHER_CACHE`` and ``HF_DATASETS_CACHE`` folders, so neither finds its
  data tokenized and packed by an earlier run (the launcher's data cache would otherwise make it
  look faster than it is);
- runs alternate (launcher, baseline, launcher, ...), and medians are compared.

Time to the first optimizer step is the time of the first ``metrics.jsonl`` record (the Trainer
logs after step 1) minus the time the command was started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import handwritten_sft
import yaml
from common import REPO, command_line, console_script, machine_line, markdown_table

RECIPE = REPO / "recipes" / "sft-mistral.yaml"
BAR = 1.05


@dataclass(frozen=True)
class Run:
    """One timed run: seconds from start to exit, to the first step, and to the last step."""

    total: float
    first_step: float
    last_step: float
    steps: int
    tokens: int
    loss: float | None
    before_launch: float | None  # launcher only: its own start-up, until the plan is written


def job_overrides(steps: int) -> list[str]:
    return [f"smoke.max_steps={steps}", f"smoke.checkpoint_every={max(steps // 3, 1)}"]


def run_logged(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run to completion with output to ``log``; (epoch start time, wall seconds)."""
    with open(log, "w", encoding="utf-8") as out:
        started, clock = time.time(), time.perf_counter()
        code = subprocess.call(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        elapsed = time.perf_counter() - clock
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(argv)}\n{log.read_text()[-4000:]}")
    return started, elapsed


def read_run(metrics: Path, started: float, total: float, plan_file: Path | None = None) -> Run:
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    trained = [r for r in records if "loss" in r]
    last = records[-1]
    return Run(
        total=total,
        first_step=records[0]["time"] - started,
        last_step=last["time"] - started,
        steps=int(last["step"]),
        tokens=int(last.get("num_input_tokens_seen", 0)),
        loss=last.get("train_loss", trained[-1]["loss"] if trained else None),
        # The last file `launcher run` writes before it starts `accelerate launch`.
        before_launch=plan_file.stat().st_mtime - started if plan_file else None,
    )


def fresh_env(work: Path, name: str) -> dict[str, str]:
    """The environment of one run: offline, and caches that start empty."""
    caches = work / "caches" / name
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LAUNCHER_CACHE": str(caches / "launcher"),
        "HF_DATASETS_CACHE": str(caches / "datasets"),
    }


def prepare_fixture(work: Path, steps: int) -> tuple[list[str], Path]:
    """Untimed: a smoke run that trains the tokenizer and writes the data both sides then use;
    returns the launcher's timed command line (without ``--run-dir``) and the fixture folder."""
    launcher = console_script("launcher")
    prep = work / "prep"
    run_logged(
        [*launcher, "run", str(RECIPE), "--smoke", "--run-dir", str(prep), *job_overrides(6)],
        fresh_env(work, "prep"),
        work / "prep.log",
    )
    fixture = work / "fixture"
    fixture.mkdir()
    shutil.copytree(prep / "tokenizer", fixture / "tokenizer")
    shutil.copy(prep / "smoke-data" / "train.jsonl", fixture / "train.jsonl")
    command = [
        *launcher,
        "run",
        str(RECIPE),
        "--smoke",
        f"tokenizer.pretrained={fixture / 'tokenizer'}",
        "data.dataset=null",
        f"data.files={{train: {fixture / 'train.jsonl'}}}",
        *job_overrides(steps),
    ]
    plan = fixture / "plan"
    subprocess.run(
        [*command[:1], "plan", *command[2:], "--run-dir", str(work / "planned"), "-o", str(plan)],
        check=True,
        cwd=REPO,
        env=fresh_env(work, "plan"),
        stdout=subprocess.DEVNULL,
    )
    check_same_model(plan / "recipe.yaml")
    return command, fixture


def check_same_model(recipe_file: Path) -> None:
    """The baseline hard-codes the model the smoke plan builds: stop if the plan has moved on."""
    planned = yaml.safe_load(recipe_file.read_text())["model"]
    config = {k: v for k, v in planned["config"].items() if k in handwritten_sft.MODEL_CONFIG}
    if config != handwritten_sft.MODEL_CONFIG or planned.get("attn_implementation") != "sdpa":
        raise SystemExit(
            f"the smoke plan's model ({planned}) is not handwritten_sft.MODEL_CONFIG "
            f"({handwritten_sft.MODEL_CONFIG}, sdpa): update benchmarks/handwritten_sft.py"
        )


def baseline_command(fixture: Path, output: Path) -> list[str]:
    plan = fixture / "plan"
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(plan / "accelerate.yaml"),
        str(REPO / "benchmarks" / "handwritten_sft.py"),
        "--data",
        str(fixture / "train.jsonl"),
        "--tokenizer",
        str(fixture / "tokenizer"),
        "--trainer-args",
        str(plan / "trainer_args.json"),
        "--output",
        str(output),
    ]


def measure(pairs: int, steps: int, work: Path) -> dict[str, list[Run]]:
    command, fixture = prepare_fixture(work, steps)
    runs: dict[str, list[Run]] = {"launcher run": [], "hand-written + accelerate launch": []}
    for i in range(pairs):
        # Alternate which goes first, so that neither always runs right after the other.
        order = ["launcher", "baseline"] if i % 2 == 0 else ["baseline", "launcher"]
        for side in order:
            name = f"{side}-{i}"
            folder = work / name
            if side == "launcher":
                argv = [*command, "--run-dir", str(folder)]
                key, plan_file = "launcher run", folder / "plan" / "command.sh"
            else:
                argv = baseline_command(fixture, folder)
                key, plan_file = "hand-written + accelerate launch", None
            started, total = run_logged(argv, fresh_env(work, name), work / f"{name}.log")
            runs[key].append(read_run(folder / "metrics.jsonl", started, total, plan_file))
    return runs


def report(runs: dict[str, list[Run]], pairs: int, steps: int) -> None:
    launcher, baseline = runs.values()

    def med(values: list[Run], field: str) -> float:
        return statistics.median(getattr(r, field) for r in values)

    rows = []
    for name, values in runs.items():
        rows.append(
            (
                name,
                f"{med(values, 'total'):.2f}",
                "-" if values[0].before_launch is None else f"{med(values, 'before_launch'):.2f}",
                f"{med(values, 'first_step'):.2f}",
                f"{med(values, 'last_step') - med(values, 'first_step'):.2f}",
                f"{med(values, 'total') - med(values, 'last_step'):.2f}",
                " ".join(f"{r.total:.1f}" for r in values),
                str(values[0].steps),
                str(values[0].tokens),
                f"{values[0].loss:.6f}" if values[0].loss is not None else "-",
            )
        )
    total_ratio = med(launcher, "total") / med(baseline, "total")
    first_ratio = med(launcher, "first_step") / med(baseline, "first_step")
    rows.append(("ratio launcher / hand-written", f"{total_ratio:.3f}", "", f"{first_ratio:.3f}"))
    rows[-1] += ("",) * (len(rows[0]) - len(rows[-1]))
    print(f"# launch overhead ({pairs} alternating pairs, {steps} steps each)\n")
    print(machine_line())
    print(f"command: {command_line()}\n")
    headers = (
        "run",
        "total s",
        "before accelerate s",
        "to first step s",
        "step 1 to last s",
        "last step to exit s",
        "each run s",
        "steps",
        "tokens",
        "train loss",
    )
    print(markdown_table(headers, rows))
    verdict = "yes" if total_ratio <= BAR else "NO"
    print(f"\nbar: total ratio {total_ratio:.3f} <= {BAR}: {verdict} (medians of {pairs} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="launcher/baseline pairs to time")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps of the job")
    parser.add_argument("--quick", action="store_true", help="1 pair of 10 steps")
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder (new or empty)")
    args = parser.parse_args()
    pairs, steps = (1, 10) if args.quick else (args.pairs, args.steps)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        report(measure(pairs, steps, args.keep), pairs, steps)
        return 0
    with tempfile.TemporaryDirectory(prefix="launcher-overhead-") as work:
        report(measure(pairs, steps, Path(work)), pairs, steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
