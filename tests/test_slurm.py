"""``launcher submit`` against the real local SLURM cluster (cluster/devcluster.sh): two nodes,
real slurmctld and slurmd daemons, submitit, DDP over gloo between the nodes.

Skipped, with the reason shown, when not root or when the cluster cannot be started.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, launcher, metrics

pytestmark = pytest.mark.slurm

GOLDEN = REPO / "tests" / "golden" / "slurm"
AUTO_CLASSES = {
    "sft-mistral": "AutoModelForCausalLM",
    "mlm-scratch": "AutoModelForMaskedLM",
    "classification-imdb": "AutoModelForSequenceClassification",
}


@pytest.fixture(scope="module")
def cluster() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (cluster/devcluster.sh start)")
    started = subprocess.run(
        [str(REPO / "cluster" / "devcluster.sh"), "start"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if started.returncode != 0:
        pytest.skip(f"the local SLURM cluster did not start:\n{started.stdout}{started.stderr}")


def profile(folder: Path, **changes: object) -> Path:
    """The dev profile with some values changed, written next to the test's files."""
    text = (REPO / "cluster" / "dev.yaml").read_text()
    for key, value in changes.items():
        text = re.sub(rf"^{key}:.*$", f"{key}: {json.dumps(value)}", text, flags=re.M)
    path = folder / "profile.yaml"
    path.write_text(text)
    return path


def wait_until_done(run_dir: Path, timeout: float = 420) -> str:
    """Poll `launcher status` until the job left the queue; return the last report."""
    deadline = time.monotonic() + timeout
    report = ""
    while time.monotonic() < deadline:
        report = launcher("status", str(run_dir), cwd=run_dir.parent).stdout
        job = json.loads((run_dir / "job.json").read_text())["job_id"]
        queued = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True)
        if not queued.stdout.strip():
            return launcher("status", str(run_dir), cwd=run_dir.parent).stdout
        time.sleep(2)
    subprocess.run(["scancel", json.loads((run_dir / "job.json").read_text())["job_id"]])
    raise AssertionError(f"the job did not finish in {timeout} s:\n{report}")


def attempts(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "attempts.jsonl").read_text().splitlines()]


def logged_steps(run_dir: Path) -> list[int]:
    return [m["step"] for m in metrics(run_dir) if "loss" in m]


@pytest.mark.parametrize("recipe", sorted(AUTO_CLASSES))
def test_smoke_recipe_on_two_nodes(recipe: str, cluster: None, workdir: Path) -> None:
    run_dir = workdir / "run"
    out = launcher(
        "submit",
        recipe,
        "--cluster",
        "dev",
        "--nodes",
        "2",
        "--smoke",
        "--run-dir",
        str(run_dir),
        cwd=workdir,
    )
    assert re.search(r"submitted job \d+ to dev: 2 node\(s\) x 1 rank\(s\)", out.stdout)

    report = wait_until_done(run_dir)
    assert "finished    step 6" in report, report
    nodes = set()
    for rank in (0, 1):
        log = (run_dir / "logs" / f"rank-{rank}.log").read_text()
        found = re.search(rf"rank {rank} on (n\d): world 2, global batch", log)
        assert found, log[-2000:]
        nodes.add(found.group(1))
    assert nodes == {"n1", "n2"}, "both nodes must have run a rank"
    shown = launcher("logs", str(run_dir), "--rank", "1", cwd=workdir).stdout
    assert shown == (run_dir / "logs" / "rank-1.log").read_text()

    import transformers

    model = getattr(transformers, AUTO_CLASSES[recipe]).from_pretrained(run_dir / "model")
    assert model.num_parameters() > 0


def test_time_limit_saves_on_the_signal_and_resumes(cluster: None, workdir: Path) -> None:
    run_dir = workdir / "run"
    # SLURM sends the signal up to a minute early: with a 3-minute limit and a 60 s lead it
    # comes 60 to 120 s in, so each attempt trains for about a minute or more, and 3000 steps
    # (over two minutes on this machine) are always interrupted at least once.
    short = profile(workdir, signal_lead_s=60)
    launcher(
        "submit",
        "sft-mistral",
        "--cluster",
        str(short),
        "--smoke",
        "--run-dir",
        str(run_dir),
        "resources.time_limit_min=3",
        "smoke.max_steps=3000",
        "smoke.checkpoint_every=1000",
        "smoke.num_samples=4000",
        cwd=workdir,
    )

    report = wait_until_done(run_dir, timeout=1200)
    assert "finished    step 3000" in report, report
    events = attempts(run_dir)
    stops = [e for e in events if e["event"] == "end" and e["reason"] == "time-limit"]
    assert stops, f"no attempt hit the time limit:\n{report}"
    starts = [e for e in events if e["event"] == "start"]
    for stop in stops:  # the next attempt resumed exactly where the signal's checkpoint was
        later = [s for s in starts if s["attempt"] == stop["attempt"] + 1]
        assert later and later[0]["resumed_from_step"] == stop["step"], events
        assert f"resumed from step {stop['step']}" in report
    steps = logged_steps(run_dir)
    assert sorted(steps) == list(range(1, 3001)), "a step was lost or repeated across attempts"


def test_requeue_from_outside_completes(cluster: None, workdir: Path) -> None:
    run_dir = workdir / "run"
    launcher(
        "submit",
        "sft-mistral",
        "--cluster",
        "dev",
        "--smoke",
        "--run-dir",
        str(run_dir),
        "smoke.max_steps=700",
        "smoke.checkpoint_every=300",
        "smoke.num_samples=900",
        cwd=workdir,
    )
    job = json.loads((run_dir / "job.json").read_text())["job_id"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # requeue once it has trained a while
        if (run_dir / "metrics.jsonl").exists() and len(logged_steps(run_dir)) > 50:
            break
        time.sleep(0.5)
    subprocess.run(["scontrol", "requeue", job], check=True)

    report = wait_until_done(run_dir, timeout=600)
    assert "finished    step 700" in report, report
    events = attempts(run_dir)
    preempted = [e for e in events if e["event"] == "end" and e["reason"] == "preempted"]
    assert preempted, events
    resumed = [e for e in events if e["event"] == "start" and e["attempt"] == 1]
    assert resumed and resumed[0]["resumed_from_step"] == preempted[0]["step"], events
    rank0 = (run_dir / "logs" / "rank-0.log").read_text()
    assert f"checkpoint-{preempted[0]['step']}" in rank0  # "resuming from .../checkpoint-N"
    assert sorted(logged_steps(run_dir)) == list(range(1, 701))


def test_failing_job_reports_the_rank_and_its_error(cluster: None, workdir: Path) -> None:
    # The file exists (submit checks that before it submits) but lacks the text column, which
    # only the rank that reads it can find out.
    data = workdir / "no-text.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"sample {i}"}) + "\n" for i in range(8)))
    recipe = workdir / "wrong-column.yaml"
    recipe.write_text(
        "# launcher submit wrong-column.yaml --cluster dev\n"
        "name: wrong-column\ntask: sft\n"
        "model: {architecture: mistral, config: {hidden_size: 32, intermediate_size: 64, "
        "num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1}}\n"
        "tokenizer: {train: {algorithm: byte_level_bpe, vocab_size: 300}, pad_token: eos}\n"
        f"data: {{files: {{train: {json.dumps(str(data))}}}}}\n"
        "training: {max_steps: 2, precision: fp32}\n"
    )
    run_dir = workdir / "run"
    launcher("submit", str(recipe), "--cluster", "dev", "--run-dir", str(run_dir), cwd=workdir)
    report = wait_until_done(run_dir)
    assert re.search(
        r"FAILED      rank 0 on n1: .*data\.text_column: 'text' is not a column of the train split "
        r"\(columns: prompt\)",
        report,
    ), report
    assert "log: " + str(run_dir / "logs" / "rank-0.log") in report
    assert "end: failed" in report


def test_batch_script_matches_the_recorded_one(workdir: Path) -> None:
    """`plan --cluster` shows the exact script; an intended change: LAUNCHER_UPDATE_GOLDEN=1."""
    gpu = REPO / "cluster" / "example-gpu.yaml"
    text = gpu.read_text() + "python: /opt/venv/bin/python\n"
    (workdir / "gpu.yaml").write_text(text)
    out = launcher(
        "plan",
        "sft-mistral-7b-zero3",
        "--cluster",
        str(workdir / "gpu.yaml"),
        "--run-dir",
        "/scratch/runs/mistral 7b",
        cwd=workdir,
    ).stdout
    script = out.split("batch script for cluster gpu-example:\n", 1)[1]
    golden = GOLDEN / "sft-mistral-7b-zero3.gpu-example.sh"
    if os.environ.get("LAUNCHER_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(script)
    assert script == golden.read_text(), (
        f"the batch script differs from {golden}; if the change is intended, rerun with "
        "LAUNCHER_UPDATE_GOLDEN=1 and review `git diff tests/golden`"
    )
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=8" in script
    assert "#SBATCH --signal=USR2@120" in script and "#SBATCH --requeue" in script


# Each piece would run `touch` if a shell read the value unquoted; the unbalanced quotes come
# after a `#`, so that they cannot turn the commands before them into a syntax error instead.
HOSTILE = "a b $(touch {marker}) `touch {marker}`; touch {marker}\ntouch {marker} # 'c\"d $HOME"


def test_hostile_values_stay_literal_in_a_real_job(
    cluster: None, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spaces, quotes, `$(...)`, backticks, `;` and newlines in paths and environment values
    reach the job as text; nothing they spell runs (no marker file appears). Secrets exported
    where `launcher submit` runs reach the ranks, and no file of the run holds one."""
    marker = workdir.parent / "PWNED"  # no space in its path: `touch` must not split it
    assert " " not in str(marker)
    value = HOSTILE.format(marker=marker)
    tokens = {
        "HF_TOKEN": f"hf_{secrets.token_hex(16)}",
        "LAUNCHER_TEST_SECRET": secrets.token_hex(16),
    }
    for name, token in tokens.items():
        monkeypatch.setenv(name, token)
    for name in ("HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    seen = workdir / "env-seen.txt"
    base = profile(workdir)
    text = base.read_text().replace("env: {}", f"env: {{LAUNCHER_TEST_VALUE: {json.dumps(value)}}}")
    text = text.replace(
        "setup: []",
        "setup: [" + json.dumps(f"printenv LAUNCHER_TEST_VALUE > {shlex.quote(str(seen))}") + "]",
    )
    base.write_text(text)
    odd = workdir / "odd $(touch PWNED) `x` 'q' \"d\"; dir"
    odd.mkdir()
    run_dir = odd / "run"
    launcher(
        "submit",
        "classification-imdb",
        "--cluster",
        str(base),
        "--smoke",
        "--run-dir",
        str(run_dir),
        "smoke.max_steps=2",
        "secrets=[LAUNCHER_TEST_SECRET]",
        cwd=odd,
    )
    report = wait_until_done(run_dir)
    assert "finished    step 2" in report, report
    assert seen.read_text() == value + "\n"
    assert not list(workdir.parent.rglob("PWNED")), "a hostile string ran as a command"
    log = (run_dir / "logs" / "rank-0.log").read_text()
    assert "secrets in the environment: HF_TOKEN, LAUNCHER_TEST_SECRET (values" in log
    # The batch script, submitit's pickles and logs, the plan, every rank log: no token.
    written = [(p, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".pkl" for p, _ in written) and any(
        p.suffix == ".sh" for p, _ in written
    )
    for name, token in tokens.items():
        leaks = [str(p) for p, data in written if token.removeprefix("hf_").encode() in data]
        assert not leaks, f"{name} was written into {leaks}"
    for path in [run_dir, *run_dir.rglob("*")]:
        if path.is_symlink():  # submitit links the submitted script; a link's mode means nothing
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == 0o700 if path.is_dir() else mode & 0o077 == 0, f"{path}: {oct(mode)}"


def test_standalone_script_runs_with_plain_sbatch(cluster: None, workdir: Path) -> None:
    """`launcher sbatch -o job.sh` prepares the run; `sbatch job.sh` needs nothing else."""
    run_dir, script = workdir / "run", workdir / "job.sh"
    out = launcher(
        "sbatch",
        "mlm-scratch",
        "--cluster",
        "dev",
        "--smoke",
        "--run-dir",
        str(run_dir),
        "-o",
        str(script),
        cwd=workdir,
    )
    assert "sbatch" in out.stdout and script.read_text().startswith("#!/bin/bash")
    submitted = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, check=True)
    job = submitted.stdout.split()[-1]
    deadline = time.monotonic() + 300
    while subprocess.run(
        ["squeue", "-h", "-j", job], capture_output=True, text=True
    ).stdout.strip():
        assert time.monotonic() < deadline, "the standalone job did not finish"
        time.sleep(2)
    report = launcher("status", str(run_dir), cwd=workdir).stdout
    assert "finished    step 6" in report, report
    assert f"start, job {job}, from step 0" in report
    for rank in (0, 1):
        assert "world 2" in (run_dir / "logs" / f"rank-{rank}.log").read_text()


def test_cancel_stops_the_job_and_records_it(cluster: None, workdir: Path) -> None:
    run_dir = workdir / "run"
    launcher(
        "submit",
        "sft-mistral",
        "--cluster",
        "dev",
        "--smoke",
        "--run-dir",
        str(run_dir),
        "smoke.max_steps=100000",
        cwd=workdir,
    )
    job = json.loads((run_dir / "job.json").read_text())["job_id"]
    deadline = time.monotonic() + 120
    while not (run_dir / "attempts.jsonl").exists():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.5)
    out = launcher("cancel", job, cwd=workdir)  # by job id: found through the scheduler
    assert f"cancelled job {job}" in out.stdout
    report = wait_until_done(run_dir, timeout=120)
    assert "end: cancelled" in report
    assert not (run_dir / "result.json").exists()
