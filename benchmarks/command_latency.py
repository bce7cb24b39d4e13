"""Command latency on a login node: what a user waits for before anything trains.

    python benchmarks/command_latency.py            # 15 rounds (about 1.5 minutes)
    python benchmarks/command_latency.py --quick    # 1 round, a check that it works

Median wall time of fresh processes of ``launcher --help``, ``launcher plan`` (also with settings
passed through to the Trainer and DeepSpeed, which are checked against those libraries' field
lists), ``launcher submit --dry-run`` and ``accelerate launch --help``, interleaved round by round, each also as a ratio to
``accelerate launch --help`` measured in the same run. ``python -c pass`` is the floor no Python
command goes below. Bar (issue 5): plan at most 1/10 of ``accelerate launch --help`` and under
0.3 s absolute.

Every command runs with a warm bytecode cache (``PYTHONPYCACHEPREFIX`` in a temporary folder,
filled by an untimed warm-up round), as on an installed system: pip compiles what it installs and
an editable checkout writes ``__pycache__`` on first use. Where ``PYTHONDONTWRITEBYTECODE`` is set
(development sandboxes), the launcher's own modules are compiled from source on every run; one
more row measures ``launcher plan`` that way.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from common import (
    REPO,
    Command,
    command_line,
    console_script,
    interleaved_medians,
    machine_line,
    markdown_table,
)

RECIPE = "recipes/sft-mistral.yaml"
BASELINE = "accelerate launch --help"
PLAN = f"launcher plan {RECIPE}"
PLAN_NO_CACHE = f"{PLAN} (no bytecode cache for launcher/)"
# Settings passed through to the Trainer and DeepSpeed, checked against their field lists.
PASSTHROUGH = (
    "training.extra.neftune_noise_alpha=5",
    "distributed.strategy=deepspeed",
    "distributed.zero_stage=2",
    "distributed.deepspeed.zero_optimization.reduce_bucket_size=2e8",
)
PLAN_PASSTHROUGH = f"{PLAN} {' '.join(PASSTHROUGH)}"
PLAN_BAR_S = 0.3
PLAN_BAR_RATIO = 0.1


def commands(cached: dict[str, str], compare_uncached: bool) -> dict[str, Command]:
    launcher = console_script("launcher")
    submit = [*launcher, "submit", RECIPE, "--cluster", "dev", "--dry-run"]
    jobs = {
        "python -c pass": Command([sys.executable, "-c", "pass"], cached),
        "launcher --help": Command([*launcher, "--help"], cached),
        PLAN: Command([*launcher, "plan", RECIPE], cached),
        PLAN_PASSTHROUGH: Command([*launcher, "plan", RECIPE, *PASSTHROUGH], cached),
        f"launcher submit {RECIPE} --cluster dev --dry-run": Command(submit, cached),
        BASELINE: Command([*console_script("accelerate"), "launch", "--help"], cached),
    }
    no_cache = (
        os.environ.get("PYTHONDONTWRITEBYTECODE") and not (REPO / "launcher/__pycache__").exists()
    )
    if compare_uncached and no_cache:
        uncached = {**os.environ, "HF_HUB_OFFLINE": "1"}
        jobs[PLAN_NO_CACHE] = Command([*launcher, "plan", RECIPE], uncached)
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed runs of each command")
    parser.add_argument(
        "--quick", action="store_true", help="1 round, no warm-up or bytecode cache: it works"
    )
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds

    with tempfile.TemporaryDirectory(prefix="launcher-bench-pycache-") as cache:
        cached = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPYCACHEPREFIX": cache,
            "HF_HUB_OFFLINE": "1",
        }
        if args.quick:
            cached = {**os.environ, "HF_HUB_OFFLINE": "1"}
        jobs = commands(cached, compare_uncached=not args.quick)
        timings = interleaved_medians(jobs, rounds, cwd=REPO, warmup=0 if args.quick else 1)
    baseline = timings[BASELINE].median
    rows = [
        (
            name,
            f"{t.median:.3f}",
            f"{t.low:.3f}",
            f"{t.high:.3f}",
            f"{t.cpu_median:.3f}",
            f"{t.median / baseline:.3f}",
        )
        for name, t in timings.items()
    ]
    cache = "no bytecode cache (--quick)" if args.quick else "warm bytecode cache"
    print(f"# command latency ({rounds} interleaved rounds, fresh processes, {cache})\n")
    print(machine_line())
    print(f"command: {command_line()}\n")
    headers = ("command", "median s", "min s", "max s", "cpu s", f"ratio to `{BASELINE}`")
    print(markdown_table(headers, rows))
    print()
    for name in (PLAN, PLAN_PASSTHROUGH):
        plan = timings[name].median
        ratio_ok = plan <= PLAN_BAR_RATIO * baseline
        absolute_ok = plan < PLAN_BAR_S
        print(
            f"bar: {name.split(' ', 2)[1]}{' (pass-through)' if name != PLAN else ''} "
            f"{plan:.3f} s <= {PLAN_BAR_RATIO:g} x {baseline:.3f} s: "
            f"{'yes' if ratio_ok else 'NO'}; < {PLAN_BAR_S} s: {'yes' if absolute_ok else 'NO'}"
        )
    print(
        "cpu s: user + system time of the process, median; it moves less than wall time when "
        "other jobs share the cores."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
