"""``launcher submit`` against the real local SLURM cluster (cluster/devcluster.sh): two nodes,
real slurmctld and slurmd daemons, submitit, DDP over gloo between the nodes.

Skipped, with the reason shown, when not root or when the cluster cannot be started.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, launcher
from slurm_helpers import (
    HOSTILE,
    check_both_nodes_trained,
    complete_steps,
    events,
    logged_steps,
    poll,
    profile,
    read_attempts,
    shard_names,
    steps_logged,
    wait_until_done,
)

from launcher.backends.run_lock import read_holder, still_holding
from launcher.contract import RunLayout

pytestmark = pytest.mark.slurm

GOLDEN = REPO / "tests" / "backends" / "golden"
AUTO_CLASSES = {
    "sft-mistral": "AutoModelForCausalLM",
    "mlm-scratch": "AutoModelForMaskedLM",
    "classification-imdb": "AutoModelForSequenceClassification",
}


# Each shipped workload on two nodes with DDP. ZeRO across the nodes: ZeRO-2 in
# test_standalone_script_with_node_local_checkpoints, ZeRO-3 (SFT) in test_slurm_zero.py.
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
    check_both_nodes_trained(run_dir)
    shown = launcher("logs", str(run_dir), "--rank", "1", cwd=workdir).stdout
    assert shown == (run_dir / "logs" / "rank-1.log").read_text()

    import transformers

    model = getattr(transformers, AUTO_CLASSES[recipe]).from_pretrained(run_dir / "model")
    assert model.num_parameters() > 0


def test_requeue_from_outside_resumes_where_it_saved(cluster: None, workdir: Path) -> None:
    """DDP: `scontrol requeue` (what preemption does) makes the job save on SIGTERM and start
    again from that checkpoint. Then a node goes down mid-job: SLURM requeues the job, which waits
    for the node to return and resumes from the newest complete checkpoint, the lost attempt
    recorded as a node failure. The run is cancelled once that attempt trains. It never ends by
    itself, so each event lands mid-run on a machine of any speed. (ZeRO-3 on two nodes takes the
    time-limit and preemption path to its end: test_slurm_zero.py.)"""
    run_dir = workdir / "run"
    args = ["sft-mistral", "--smoke", "--run-dir", str(run_dir), "smoke.max_steps=1000000"]
    args.append("smoke.checkpoint_every=1000000")
    launcher("submit", *args, "--cluster", "dev", cwd=workdir)
    job = json.loads((run_dir / "job.json").read_text())["job_id"]
    try:
        poll("attempt 0 to train 5 steps", lambda: steps_logged(run_dir) >= 5, 600, run_dir)
        subprocess.run(["scontrol", "requeue", job], check=True)

        (preempted,) = poll(
            "attempt 0's preemption checkpoint", lambda: events(run_dir, event="end"), 300, run_dir
        )
        assert preempted["reason"] == "preempted" and preempted["step"], preempted
        (resumed,) = poll(
            "attempt 1", lambda: events(run_dir, event="start", attempt=1), 600, run_dir
        )
        assert resumed["resumed_from_step"] == preempted["step"], read_attempts(run_dir)
        poll(
            "attempt 1 to train",
            lambda: steps_logged(run_dir) >= preempted["step"] + 3,
            600,
            run_dir,
        )
        # The job is the run's one writer, across its attempts: a second one is refused.
        for second in (["run", *args], ["submit", *args, "--cluster", "dev"]):
            refused = launcher(*second, cwd=workdir, check=False)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert f"is in use by SLURM job {job} (since" in refused.stderr, refused.stderr
            assert "it is RUNNING" in refused.stderr and "launcher cancel" in refused.stderr

        # n2 fails: down (SLURM stops the job and requeues it), then drained so that it stays
        # out (its slurmd still answers here, and ReturnToService=2 would take it back at once).
        for state in ("down", "drain"):
            update = ["scontrol", "update", "nodename=n2", f"state={state}", "reason=test"]
            subprocess.run(update, check=True)
        try:
            poll("the job requeued after the node failure", lambda: requeued(job), 300, run_dir)
            (lost,) = poll(
                "attempt 1's end", lambda: events(run_dir, event="end", attempt=1), 300, run_dir
            )
        finally:  # the node comes back whatever happened
            subprocess.run(["scontrol", "update", "nodename=n2", "state=resume"], check=False)
        assert lost["reason"] == "node-failure" and lost["nodes_down"] == ["n2"], lost
        (again,) = poll(
            "attempt 2", lambda: events(run_dir, event="start", attempt=2), 600, run_dir
        )
        newest = lost["step"] or preempted["step"]  # saved on the SIGTERM, when the ranks could
        assert again["resumed_from_step"] == newest, read_attempts(run_dir)
        poll("attempt 2 to train", lambda: steps_logged(run_dir) >= newest + 3, 600, run_dir)
        launcher("cancel", str(run_dir), cwd=workdir)
    finally:  # a failed check must not leave a job that never ends
        subprocess.run(["scancel", job], capture_output=True)

    report = wait_until_done(run_dir, timeout=300)
    assert "end: cancelled" in report, report
    # The job's lock is released or, once the job left the queue, stale.
    found = read_holder(RunLayout(run_dir))
    assert found is None or not still_holding(*found)[0], found
    rank0 = (run_dir / "logs" / "rank-0.log").read_text()
    saved = run_dir / "checkpoints" / f"checkpoint-{preempted['step']}"
    assert f"resuming from {saved}" in rank0
    # Each attempt went on where the one before saved: every step once, none missing (a node
    # that died without a save would replay the steps since the newest checkpoint).
    steps = logged_steps(run_dir)
    assert sorted(steps) == list(range(1, max(steps) + 1)) and max(steps) > newest


def requeued(job: str) -> bool:
    state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return state.stdout.strip() in ("PENDING", "REQUEUED", "REQUEUE_HOLD")


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
    (ended,) = events(run_dir, event="end")  # the attempt's record names the rank's reason
    assert "'text' is not a column of the train split" in ended["error"], ended


def test_hostile_values_stay_literal_in_a_real_job(
    cluster: None, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spaces, quotes, `$(...)`, backticks, `;` and newlines in paths and environment values
    reach the job as text; nothing they spell runs (no marker file appears). Secrets exported
    where `launcher submit` runs reach the ranks, and no file of the run holds one. The job is
    the NER recipe's smoke run: token classification under SLURM, on one rank."""
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
        "ner",
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
    final = json.loads((run_dir / "result.json").read_text())["final_metrics"]
    assert {"eval_f1", "eval_precision", "eval_recall", "eval_accuracy"} <= set(final)
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


def test_standalone_script_with_node_local_checkpoints(cluster: None, workdir: Path) -> None:
    """`launcher sbatch -o job.sh` prepares the run; `sbatch job.sh` needs nothing else. ZeRO-2
    with each node's shards on its own disk (`{node}` keeps the two dev nodes apart on this one
    machine), requeued from outside and resumed by both nodes from the same step; export once
    the nodes' copies are gathered. (ZeRO-3 through the same script: test_slurm_zero.py.)"""
    run_dir, script = workdir / "run", workdir / "job.sh"
    local = workdir / "local"
    out = launcher(
        "sbatch", "mlm-scratch", "--cluster", "dev", "--smoke", "--run-dir", str(run_dir),
        "-o", str(script), "distributed.strategy=deepspeed", "distributed.zero_stage=2",
        "checkpointing.use_node_local_storage=true",
        f"checkpointing.node_local_dir={local}/{{node}}", "smoke.max_steps=1000000",
        cwd=workdir,
    ).stdout  # fmt: skip
    assert "sbatch" in out and script.read_text().startswith("#!/bin/bash")
    summary = (run_dir / "plan" / "summary.txt").read_text()
    assert f"on each node's own disk in {local}/{{node}}/run-" in summary
    submitted = subprocess.run(["sbatch", str(script)], capture_output=True, text=True, check=True)
    job = submitted.stdout.split()[-1]
    folder = json.loads((run_dir / "plan" / "contract.json").read_text())["checkpoints_dir"]
    on_node = {node: Path(folder.replace("{node}", node)) for node in ("n1", "n2")}

    def saved_on_both(after: int = 0) -> list[int]:
        steps = [set(complete_steps(on_node[node])) for node in on_node]
        return sorted(s for s in steps[0] & steps[1] if s > after)

    try:
        first = poll("a checkpoint on both nodes", saved_on_both, 600, run_dir)[0]
        subprocess.run(["scontrol", "requeue", job], check=True)
        start = poll(
            "the requeued attempt",
            lambda: [
                e for e in read_attempts(run_dir) if e["event"] == "start" and e["attempt"] == 1
            ],
            600,
            run_dir,
        )[0]
        resumed = start["resumed_from_step"]
        assert resumed is not None and resumed >= first
        poll("a checkpoint after the resume", lambda: saved_on_both(resumed), 600, run_dir)
    finally:
        subprocess.run(["scancel", job], check=False)
    report = wait_until_done(run_dir, timeout=300, job=job)
    assert f"start, job {job}, from step 0" in report
    assert f"start, job {job}, resumed from step {resumed}" in report
    assert "checkpoint  on each node's own disk: " in report
    check_both_nodes_trained(run_dir)
    rank0 = (run_dir / "logs" / "rank-0.log").read_text()
    assert f"resuming from {on_node['n1']}/checkpoint-{resumed}" in rank0
    steps = logged_steps(run_dir)
    assert sorted(steps) == list(range(1, max(steps) + 1)), "a step was lost or repeated"

    # Each node wrote only its own rank's shards, beside everything it needs to resume alone.
    newest = saved_on_both()[-1]
    for rank, node in enumerate(on_node):
        checkpoint = on_node[node] / f"checkpoint-{newest}"
        shards = {p.name for p in (checkpoint / f"global_step{newest}").glob("zero_pp_rank_*")}
        assert shards == shard_names(rank, stage=2), (node, shards)
        for name in ("launcher-complete.json", "trainer_state.json", "latest"):
            assert (checkpoint / name).is_file(), (node, name)
    assert not list((run_dir / "checkpoints").glob("checkpoint-*"))

    refused = launcher("export", str(run_dir), "-o", str(workdir / "out"), cwd=workdir, check=False)
    assert refused.returncode != 0 and "on each node's own disk" in refused.stderr, refused.stderr
    gathered = run_dir / "checkpoints" / f"checkpoint-{newest}"
    for node in on_node:
        shutil.copytree(on_node[node] / f"checkpoint-{newest}", gathered, dirs_exist_ok=True)
    launcher("export", str(run_dir), "-o", str(workdir / "out"), cwd=workdir)
    import transformers

    assert transformers.AutoModelForMaskedLM.from_pretrained(workdir / "out").num_parameters() > 0


def test_a_job_the_cluster_cannot_run_is_refused_before_anything_is_written(
    cluster: None, workdir: Path
) -> None:
    """Three nodes on the two-node dev cluster: `sbatch --test-only` says no, and the refusal
    names what the job asks for; no run directory, no job."""
    run_dir = workdir / "run"
    queued = ["squeue", "-h", "-o", "%i"]
    before = set(subprocess.run(queued, capture_output=True, text=True).stdout.split())
    refused = launcher(
        "submit", "mlm-scratch", "--cluster", "dev", "--nodes", "3", "--smoke",
        "--run-dir", str(run_dir), cwd=workdir, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.startswith("error: cluster dev cannot run this job as planned; nothing")
    assert (
        "sbatch --test-only: " in refused.stderr
        and "3 node(s) (distributed.nodes)" in refused.stderr
    )
    assert "Traceback" not in refused.stderr
    assert not run_dir.exists()
    assert set(subprocess.run(queued, capture_output=True, text=True).stdout.split()) <= before


def test_plan_asks_the_scheduler_too(cluster: None, workdir: Path) -> None:
    """`plan --cluster` where sbatch answers says whether the cluster could run the job."""
    fits = launcher("plan", "mlm-scratch", "--smoke", "--cluster", "dev", cwd=workdir)
    assert fits.stdout.rstrip().endswith("sbatch --test-only: cluster dev can run this job")
    refused = launcher(
        "plan", "mlm-scratch", "--smoke", "--cluster", "dev", "--nodes", "3", cwd=workdir,
        check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "cannot run this job as planned" in refused.stderr
