"""DeepSpeed ZeRO-3 across the two nodes of the development SLURM cluster: one world, shards from
both nodes, the time-limit signal, preemption, resume, export, and no secret in any file.

Two jobs carry every check (each job pays for starting ranks on both nodes):

1. ``launcher submit`` of the shipped ZeRO-3 recipe (smoke-sized), with more steps than any machine
   trains in a test. Once it trains, the test shortens the job's time limit (``scontrol update``) so
   that SLURM's own warning signal comes soon: attempt 0 saves on it and requeues. Attempt 1
   resumes and is requeued from outside (``scontrol requeue``, what preemption does); attempt 2
   resumes, saves a periodic checkpoint, and the run is cancelled. The test ends on that evidence,
   not on a step count or a clock, so it holds on a machine of any speed.
2. ``launcher sbatch`` of the same recipe, uninterrupted, to the last step job 1 saved: its final
   weights must equal job 1's.
"""

from __future__ import annotations

import json
import math
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import launcher, metrics
from slurm_helpers import (
    attempts,
    check_shards_of_both_ranks,
    complete_steps,
    events,
    logged_steps,
    poll,
    steps_logged,
    wait_until_done,
)

pytestmark = pytest.mark.slurm

RECIPE = "sft-mistral-7b-zero3"
EVERY = 5  # checkpoint every N steps: attempt 2 saves one soon after it resumes
# The shipped recipe for 8 GPUs on one node, on the dev cluster's two CPU nodes, one rank each;
# a constant learning rate, so that a run cut short at step N equals the first N steps of a long one.
OVERRIDES = (
    "distributed.processes_per_node=1",
    "resources.memory_gb=null",
    "resources.time_limit_min=10",
    "training.lr_scheduler=constant",
    "training.warmup_steps=0",
    f"smoke.checkpoint_every={EVERY}",
    "checkpointing.keep=3",
    "secrets=[LAUNCHER_TEST_SECRET]",
)
NEVER_REACHED = 1_000_000


def run_complete_steps(run_dir: Path) -> list[int]:
    return complete_steps(run_dir / "checkpoints")


def scontrol(*words: str) -> None:
    subprocess.run(["scontrol", *words], check=True, capture_output=True, text=True)


def elapsed_s(job: str) -> int:
    """Seconds the job's current attempt has run, by the scheduler's clock."""
    shown = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True, text=True, check=True
    ).stdout.strip()
    days, _, clock = shown.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    seconds = sum(value * 60**i for i, value in enumerate(reversed(parts)))
    return seconds + int(days or 0) * 86400


@dataclass
class InterruptedRun:
    run_dir: Path
    workdir: Path
    job: str
    tokens: dict[str, str]
    time_limit_step: int
    preempted_step: int
    final_step: int


@pytest.fixture(scope="module")
def interrupted(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> InterruptedRun:
    workdir = tmp_path_factory.mktemp("zero3") / "work dir"
    workdir.mkdir()
    run_dir = workdir / "run"
    tokens = {
        "HF_TOKEN": f"hf_{secrets.token_hex(16)}",
        "LAUNCHER_TEST_SECRET": secrets.token_hex(16),
    }
    with pytest.MonkeyPatch.context() as env:
        for name, token in tokens.items():
            env.setenv(name, token)
        out = launcher(
            "submit", RECIPE, "--cluster", "dev", "--nodes", "2", "--smoke",
            "--run-dir", str(run_dir), *OVERRIDES, f"smoke.max_steps={NEVER_REACHED}",
            cwd=workdir,
        ).stdout  # fmt: skip
    assert "submitted job" in out, out
    job = json.loads((run_dir / "job.json").read_text())["job_id"]
    try:
        return drive(run_dir, workdir, job, tokens)
    finally:
        subprocess.run(["scancel", job], capture_output=True)


def drive(run_dir: Path, workdir: Path, job: str, tokens: dict[str, str]) -> InterruptedRun:
    """Walk the job through time limit, preemption and cancel, waiting for evidence each time."""
    poll("attempt 0 to train 3 steps", lambda: steps_logged(run_dir) >= 3, 600, run_dir)
    # The limit that makes SLURM's warning (signal_lead_s = 60 before the end) due within a
    # minute: SLURM counts limits in whole minutes and checks them about every 30 s.
    scontrol("update", f"JobId={job}", f"TimeLimit={math.ceil(elapsed_s(job) / 60) + 1}")
    stop = poll(
        "the time-limit signal's checkpoint",
        lambda: events(run_dir, event="end", attempt=0, reason="time-limit"),
        300,
        run_dir,
    )[0]
    scontrol("update", f"JobId={job}", "TimeLimit=10")  # the next attempts run undisturbed
    assert stop["saved"] is True, stop
    time_limit_step = stop["step"]

    start = poll("attempt 1", lambda: events(run_dir, event="start", attempt=1), 600, run_dir)
    assert start[0]["resumed_from_step"] == time_limit_step, attempts(run_dir)
    poll(
        "attempt 1 to train past its resume",
        lambda: steps_logged(run_dir) >= time_limit_step + 3,
        600,
        run_dir,
    )
    scontrol("requeue", job)  # what preemption does: SIGTERM to every process, requeue
    preempted = poll(
        "attempt 1's preemption checkpoint",
        lambda: events(run_dir, event="end", attempt=1, reason="preempted"),
        300,
        run_dir,
    )[0]
    start = poll("attempt 2", lambda: events(run_dir, event="start", attempt=2), 600, run_dir)
    assert start[0]["resumed_from_step"] == preempted["step"], attempts(run_dir)
    poll(
        "attempt 2's first periodic checkpoint",
        lambda: [s for s in run_complete_steps(run_dir) if s > preempted["step"]],
        600,
        run_dir,
    )
    cancelled = launcher("cancel", job, cwd=workdir).stdout  # by job id, through the scheduler
    assert f"cancelled job {job} ({run_dir})" in cancelled
    report = wait_until_done(run_dir, timeout=300)
    assert "end: cancelled" in report, report
    assert not (run_dir / "result.json").exists(), "a cancelled run is not a finished one"
    return InterruptedRun(
        run_dir=run_dir,
        workdir=workdir,
        job=job,
        tokens=tokens,
        time_limit_step=time_limit_step,
        preempted_step=preempted["step"],
        final_step=run_complete_steps(run_dir)[-1],
    )


def test_zero3_trains_one_world_across_both_nodes(interrupted: InterruptedRun) -> None:
    run_dir = interrupted.run_dir
    summary = (run_dir / "plan" / "summary.txt").read_text()
    assert (
        "on each of 2 nodes: accelerate launch --machine_rank NODE -> torch.distributed.run "
        in summary
    )
    assert "deepspeed_multinode_launcher: standard" in summary
    nodes = set()
    for rank in (0, 1):
        log = (run_dir / "logs" / f"rank-{rank}.log").read_text()
        # Every attempt's plan check passed on both ranks: one world of 2, not two worlds of 1.
        seen = [line for line in log.splitlines() if f"[launcher] rank {rank} on " in line]
        assert len(seen) == 3, seen
        assert all("world 2, global batch" in line for line in seen), seen
        nodes |= {line.split(" on ")[1].split(":")[0] for line in seen}
    assert nodes == {"n1", "n2"}
    for step in run_complete_steps(run_dir):  # each node wrote its own rank's partitions
        check_shards_of_both_ranks(run_dir / "checkpoints" / f"checkpoint-{step}", step, stage=3)


def test_zero3_resumes_every_step_once_across_time_limit_and_preemption(
    interrupted: InterruptedRun,
) -> None:
    run_dir = interrupted.run_dir
    record = attempts(run_dir)
    reasons = [(e["attempt"], e["reason"]) for e in record if e["event"] == "end"]
    assert reasons[:2] == [(0, "time-limit"), (1, "preempted")], record
    # `launcher cancel` records the cancel; the node task tells it from a preemption too.
    assert {("-", "cancelled"), (2, "cancelled")} <= set(reasons), record
    starts = [(e["attempt"], e["resumed_from_step"]) for e in record if e["event"] == "start"]
    assert starts == [
        (0, None),
        (1, interrupted.time_limit_step),
        (2, interrupted.preempted_step),
    ], record
    assert interrupted.time_limit_step < interrupted.preempted_step < interrupted.final_step
    steps = logged_steps(run_dir)
    assert sorted(steps) == list(range(1, max(steps) + 1)), "a step was lost or repeated"
    assert max(steps) == interrupted.final_step, "training stopped at the last save"
    losses = [m["loss"] for m in metrics(run_dir) if "loss" in m]
    assert all(math.isfinite(loss) for loss in losses)


def test_no_file_holds_the_environment_or_a_secret(interrupted: InterruptedRun) -> None:
    """accelerate's pdsh path appended the environment to `.deepspeed_env` in the working
    directory; no run may write the environment anywhere, in the run or where it was started."""
    workdir = interrupted.workdir
    assert [p.name for p in workdir.iterdir()] == ["run"], "files outside the run directory"
    assert not list(workdir.rglob(".deepspeed_env")), "the environment was written to a file"
    assert not (Path.home() / ".deepspeed_env").exists()
    written = [(p, p.read_bytes()) for p in workdir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pkl" for p, _ in written), "submitit's files are searched too"
    for name, token in interrupted.tokens.items():
        leaks = [str(p) for p, data in written if token.removeprefix("hf_").encode() in data]
        assert not leaks, f"{name} was written into {leaks}"
    log = (interrupted.run_dir / "logs" / "rank-0.log").read_text()
    assert "secrets in the environment: HF_TOKEN, LAUNCHER_TEST_SECRET (values" in log


def test_export_and_an_uninterrupted_sbatch_run_agree_with_the_shards(
    interrupted: InterruptedRun, tmp_path: Path
) -> None:
    """`launcher export` of the shards both nodes wrote equals their fp32 masters, and equals the
    final model of an uninterrupted two-node run (plain `sbatch` of `launcher sbatch`'s script)."""
    import torch
    from conftest import load_weights
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    step = interrupted.final_step
    checkpoint = interrupted.run_dir / "checkpoints" / f"checkpoint-{step}"
    exported = tmp_path / "exported"
    launcher("export", str(interrupted.run_dir), "--checkpoint", str(step), "-o", str(exported),
             cwd=tmp_path)  # fmt: skip
    weights = load_weights(exported)
    masters = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=f"global_step{step}")
    assert set(masters) <= set(weights)
    for name, tensor in masters.items():
        assert torch.equal(weights[name], tensor), name

    reference, script = tmp_path / "reference", tmp_path / "job.sh"
    launcher(
        "sbatch", RECIPE, "--cluster", "dev", "--nodes", "2", "--smoke", "--run-dir",
        str(reference), "-o", str(script), *OVERRIDES, f"smoke.max_steps={step}", cwd=tmp_path,
    )  # fmt: skip
    submitted = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, check=True)
    job = submitted.stdout.split()[-1]
    report = wait_until_done(reference, timeout=900, job=job)
    assert f"finished    step {step}" in report, report
    for rank in (0, 1):
        assert "world 2, global batch" in (reference / "logs" / f"rank-{rank}.log").read_text()
    final = load_weights(reference / "model")
    differ = [name for name in masters if not torch.equal(final[name], masters[name])]
    assert not differ, f"{len(differ)} tensors differ from the uninterrupted run, e.g. {differ[:3]}"

    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(reference / "model")
    assert model.num_parameters() > 0
