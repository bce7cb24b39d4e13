"""A run directory is only one the launcher made, and has one writer at a time.

The real second writers (a second `launcher run` beside a live one, a run resumed after its
launcher was SIGKILLed, a local run beside a SLURM job of the run) are in the e2e and SLURM tiers:
test_integration.py, shared_runs.py and test_slurm.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from launcher.backends.run_dir import RunDirError, prepare_run_dir
from launcher.backends.run_lock import (
    STALE_AFTER_S,
    Holder,
    RunInUse,
    claim_for_job,
    hand_to_job,
    new_token,
    read_holder,
    release_run_lock,
    take_run_lock,
    this_process,
    write_holder,
)
from launcher.commands.resolve import resolve_plan
from launcher.contract import RunLayout
from launcher.errors import RecipeError
from launcher.plan.build import build_plan
from launcher.recipe.loader import load_recipe

RECIPE = REPO / "recipes" / "mlm-scratch.yaml"


def plan_for(run_dir: Path):  # type: ignore[no-untyped-def]
    return build_plan(load_recipe(RECIPE), run_dir)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its mode and size: what a refusal must leave alone."""
    found = {".": (folder.stat().st_mode, 0)}
    for path in folder.rglob("*"):
        info = path.lstat()
        found[str(path.relative_to(folder))] = (info.st_mode, info.st_size)
    return found


@pytest.mark.parametrize("from_scratch", [False, True])
def test_a_folder_of_user_files_is_refused_and_left_as_it_was(
    tmp_path: Path, from_scratch: bool
) -> None:
    mine = tmp_path / "mystuff"
    (mine / "notes").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    (mine / "notes" / "todo.txt").write_text("backup")
    mine.chmod(0o755)
    before = snapshot(mine)
    with pytest.raises(RunDirError) as refused:
        prepare_run_dir(plan_for(mine), from_scratch=from_scratch)
    message = str(refused.value)
    assert str(mine) in message and "not a launcher run directory" in message
    assert "notes, thesis.tex" in message and "nothing was changed" in message
    assert snapshot(mine) == before
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mystuff"]  # nothing renamed aside


def test_a_home_like_folder_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".bashrc").write_text("export PATH")
    (home / ".ssh" / "id_ed25519").write_text("key")
    before = snapshot(home)
    with pytest.raises(RunDirError, match=r"holds \.bashrc, \.ssh"):
        prepare_run_dir(plan_for(home))
    assert snapshot(home) == before


def test_dot_dot_paths_are_folded_before_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`runs/../x/../..` names the folder above the working directory: refused, and neither
    `runs` nor `x` is created on the way."""
    work = tmp_path / "repo"
    work.mkdir()
    (tmp_path / "other-project").mkdir()
    monkeypatch.chdir(work)
    plan = resolve_plan(str(RECIPE), [], run_dir=Path("runs/../x/../..")).plan
    assert plan.layout.root == tmp_path
    with pytest.raises(RunDirError, match=rf"^{tmp_path} already exists"):
        prepare_run_dir(plan)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-project", "repo"]
    assert list(work.iterdir()) == []
    home_plan = resolve_plan(str(RECIPE), [], run_dir=Path("~/runs/./a/../b")).plan
    assert home_plan.layout.root == Path.home() / "runs" / "b"


def test_a_file_where_the_run_directory_goes_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        prepare_run_dir(plan_for(blocker))
    assert blocker.read_text() == "not a folder"


def test_an_empty_folder_becomes_a_run_directory_and_continues(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    assert prepare_run_dir(plan_for(empty)) is False
    marker = json.loads((empty / "launcher-run.json").read_text())
    assert marker["launcher"] and marker["created"] > 0
    assert stat.S_IMODE(empty.stat().st_mode) == 0o700
    assert not (empty / "lock.json").exists()  # a check without a holder leaves no lock
    assert prepare_run_dir(plan_for(empty)) is True


def test_a_run_made_before_the_marker_existed_continues(tmp_path: Path) -> None:
    run_dir = tmp_path / "old-run"
    prepare_run_dir(plan_for(run_dir))
    (run_dir / "launcher-run.json").unlink()
    (run_dir / "metrics.jsonl").write_text("{}\n")
    assert prepare_run_dir(plan_for(run_dir)) is True


def test_from_scratch_renames_a_launcher_run_and_leaves_its_lock_behind(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = this_process("launcher run")
    prepare_run_dir(plan_for(run_dir), holder=holder)
    assert read_holder(RunLayout(run_dir)) is not None
    (run_dir / "metrics.jsonl").write_text("{}\n")
    assert prepare_run_dir(plan_for(run_dir), from_scratch=True, holder=holder) is False
    (kept,) = tmp_path.glob("run.old-*")
    assert (kept / "metrics.jsonl").exists() and not (kept / "lock.json").exists()
    found = read_holder(RunLayout(run_dir))
    assert found is not None and found[0] == holder
    release_run_lock(RunLayout(run_dir), holder)
    assert not (run_dir / "lock.json").exists()


def locked_by(run_dir: Path, holder: Holder) -> RunLayout:
    prepare_run_dir(plan_for(run_dir))
    layout = RunLayout(run_dir)
    write_holder(layout, holder)
    return layout


def test_a_live_writer_refuses_a_second_one_and_names_itself(tmp_path: Path) -> None:
    """The holder is this test's own process (alive), recorded as another `launcher run`."""
    first = this_process("launcher run")
    layout = locked_by(tmp_path / "run", first)
    before = (tmp_path / "run" / "plan" / "recipe.yaml").stat().st_mtime_ns
    with pytest.raises(RunInUse) as refused:
        prepare_run_dir(plan_for(tmp_path / "run"), holder=this_process("launcher run"))
    message = str(refused.value)
    assert f"`launcher run`, pid {os.getpid()} on host" in message
    assert "it is running" in message and f"kill {os.getpid()}" in message
    assert "another --run-dir" in message
    assert (tmp_path / "run" / "plan" / "recipe.yaml").stat().st_mtime_ns == before
    assert read_holder(layout)[0] == first  # type: ignore[index]


def test_a_writer_whose_pid_was_reused_is_stale_and_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Our pid, but another start time: the process that held the run is gone."""
    gone = replace(this_process("launcher run"), process_start="1")
    layout = locked_by(tmp_path / "run", gone)
    mine = this_process("launcher run")
    prepare_run_dir(plan_for(tmp_path / "run"), holder=mine)
    assert "taking over" in capsys.readouterr().out
    assert read_holder(layout)[0] == mine  # type: ignore[index]


def test_a_writer_on_another_host_counts_while_its_heartbeat_is_fresh(tmp_path: Path) -> None:
    elsewhere = Holder("launcher run", "node-elsewhere", time.time(), pid=1, process_start="9")
    layout = locked_by(tmp_path / "run", elsewhere)
    with pytest.raises(RunInUse, match="last heard from 0 s ago"):
        take_run_lock(layout, this_process("launcher run"))
    old = time.time() - STALE_AFTER_S - 1
    os.utime(layout.lock_file, (old, old))
    note = take_run_lock(layout, this_process("launcher run"))
    assert note and "on another host, last heard from" in note


def test_a_job_that_cannot_be_asked_about_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without squeue (a laptop sharing the file system) a job's lock holds; the message says
    how to stop the job."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    layout = locked_by(tmp_path / "run", Holder("SLURM job", "login", time.time(), job_id="4242"))
    with pytest.raises(RunInUse) as refused:
        take_run_lock(layout, this_process("launcher run"))
    message = str(refused.value)
    assert "SLURM job 4242" in message and "cannot be asked here" in message
    assert f"launcher cancel {layout.root}" in message


def test_the_submitted_job_is_the_writer_its_submitter_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's first node may start before `launcher submit` relabels the lock: the token
    makes both the same writer; a requeued attempt (same job id) too; another job is not."""
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    submitter = this_process("launcher submit", token=new_token())
    layout = locked_by(tmp_path / "run", submitter)
    assert claim_for_job(layout, "77", submitter.token, first_node=False) is None
    assert claim_for_job(layout, "77", submitter.token, first_node=True) is None
    hand_to_job(layout, submitter, "77")
    assert read_holder(layout)[0].job_id == "77"  # type: ignore[index]
    assert claim_for_job(layout, "77", None, first_node=True) is None  # the next attempt
    with pytest.raises(RunInUse, match="SLURM job 77"):
        claim_for_job(layout, "78", None, first_node=False)
    release_run_lock(layout, submitter)  # by token: the job it became
    assert read_holder(layout) is None


RACER = """
import sys, time
from pathlib import Path
from launcher.backends.run_lock import RunInUse, take_run_lock, this_process
from launcher.contract import RunLayout
from launcher.errors import RecipeError
start = float(sys.argv[2])
while time.time() < start:
    pass
try:
    take_run_lock(RunLayout(Path(sys.argv[1])), this_process("launcher run"))
    print("took", flush=True)
    time.sleep(3)
except RunInUse:
    print("refused", flush=True)
"""


@pytest.mark.process
def test_two_launchers_starting_at_once_get_one_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    prepare_run_dir(plan_for(run_dir))
    start = str(time.time() + 2.0)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(run_dir), start], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    said = sorted(racer.communicate(timeout=60)[0].strip() for racer in racers)
    assert said == ["refused", "refused", "refused", "took"]


def test_a_run_continues_with_another_collective_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`distributed.timeout_min` changes how long a rank waits, not what is trained."""
    run_dir = tmp_path / "run"
    prepare_run_dir(plan_for(run_dir))
    patient = build_plan(load_recipe(RECIPE, ["distributed.timeout_min=90"]), run_dir)
    assert prepare_run_dir(patient) is True
    assert "another world size" not in capsys.readouterr().out
    assert "timeout_min: 90.0" in (run_dir / "plan" / "recipe.yaml").read_text()


def test_a_finished_run_stays_as_it_was(tmp_path: Path) -> None:
    """`run` (with other numbers, too) on a finished run rewrites nothing, says so with the ways
    forward and exits 0; `submit` refuses it."""
    import io

    from launcher.backends.local import run_locally
    from launcher.backends.slurm import prepare_cluster_run
    from launcher.errors import LauncherError

    run_dir = tmp_path / "run"
    prepare_run_dir(resolve_plan(str(RECIPE), [], smoke=True, run_dir=run_dir).plan)
    result = {"global_step": 6, "model_dir": "model", "final_metrics": {}}
    (run_dir / "result.json").write_text(json.dumps(result))
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    overrides = ["distributed.processes_per_node=2"]
    two_ranks = resolve_plan(str(RECIPE), overrides, smoke=True, run_dir=run_dir).plan
    out = io.StringIO()
    assert run_locally(two_ranks, out=out) == 0
    said = out.getvalue()
    assert said.startswith(f"{run_dir} has already finished; nothing to run"), said
    assert "another --run-dir" in said and "--from-scratch" in said
    assert "world size" not in said and "starting" not in said
    with pytest.raises(LauncherError, match="has already finished; nothing to submit"):
        prepare_cluster_run(two_ranks, holder=this_process("launcher submit"))
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert after == before
    assert read_holder(RunLayout(run_dir)) is None  # the refused submit let go of the lock


def test_a_run_that_saved_nothing_starts_again_with_the_fixed_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that failed before its first checkpoint continues with a changed recipe without
    --from-scratch; once it saved a checkpoint, a changed recipe is refused."""
    run_dir = tmp_path / "run"
    prepare_run_dir(plan_for(run_dir))
    fixed = build_plan(load_recipe(RECIPE, ["training.learning_rate=1e-5"]), run_dir)
    prepare_run_dir(fixed)
    assert "has no checkpoint yet; it starts again with this recipe" in capsys.readouterr().out
    assert (
        yaml.safe_load((run_dir / "plan" / "recipe.yaml").read_text())["training"]["learning_rate"]
        == 1e-5
    )
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(RunDirError, match="holds a run of a different recipe"):
        prepare_run_dir(plan_for(run_dir))


def test_a_run_started_by_an_older_launcher_continues_after_an_upgrade(tmp_path: Path) -> None:
    """Keys added to the schema since the run started (absent from its stored recipe) take their
    defaults, so the run continues; a real change is still refused."""
    run_dir = tmp_path / "run"
    prepare_run_dir(plan_for(run_dir))
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    stored_file = run_dir / "plan" / "recipe.yaml"
    stored = yaml.safe_load(stored_file.read_text())
    del stored["tracking"], stored["training"]["report_to"], stored["distributed"]["deepspeed"]
    stored_file.write_text(yaml.safe_dump(stored))
    prepare_run_dir(plan_for(run_dir))  # no error: the same recipe as this version reads it
    stored["training"]["learning_rate"] = 1.0
    stored_file.write_text(yaml.safe_dump(stored))
    with pytest.raises(RunDirError, match=r"training.learning_rate: 1.0 -> "):
        prepare_run_dir(plan_for(run_dir))


def test_a_hub_model_not_cached_is_refused_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF_HUB_OFFLINE with a hub id the cache has no copy of: a recipe problem before the launch
    (not a traceback in every rank); online, the hub client is left to fetch it."""
    from launcher.backends.run_dir import check_local_paths

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    overrides = ["model.pretrained=org/not-cached", "tokenizer.pretrained=org/not-cached-tok"]
    plan = build_plan(
        load_recipe(REPO / "recipes" / "classification-imdb.yaml", overrides), tmp_path / "run"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecipeError) as refused:
        check_local_paths(plan)
    message = str(refused.value)
    assert "model.pretrained: org/not-cached is a hub id, HF_HUB_OFFLINE is set" in message
    assert "tokenizer.pretrained: org/not-cached-tok is a hub id" in message
    assert "`hf download org/not-cached`" in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    check_local_paths(plan)  # online: nothing to refuse here
