"""Checkpoint completion, resume choice, set-aside of incomplete saves, and the run preflight."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO

from launcher.backends.run_dir import RunDirError, check_free_disk, prepare_run_dir
from launcher.checkpoints import (
    COMPLETE_MARKER,
    latest_complete_checkpoint,
    move_aside,
    problem_with,
    rotate,
    write_manifest,
)
from launcher.plan.build import build_plan
from launcher.recipe.loader import load_recipe


def fake_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    folder = root / f"checkpoint-{step}"
    (folder / "global_step1").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    (folder / "global_step1" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"o" * 50)
    if complete:
        write_manifest(folder, step, world_size=2)
    return folder


def test_manifest_lists_every_file_with_its_size(tmp_path: Path) -> None:
    folder = fake_checkpoint(tmp_path, 10)
    assert problem_with(folder) is None
    import json

    manifest = json.loads((folder / COMPLETE_MARKER).read_text())
    assert manifest["step"] == 10 and manifest["world_size"] == 2
    assert manifest["files"] == {
        "global_step1/zero_pp_rank_0_mp_rank_00_optim_states.pt": 50,
        "model.safetensors": 100,
    }
    assert not list(folder.glob(".*partial"))


def test_a_truncated_or_missing_file_makes_a_checkpoint_incomplete(tmp_path: Path) -> None:
    folder = fake_checkpoint(tmp_path, 10)
    (folder / "model.safetensors").write_bytes(b"w" * 60)  # a save cut short
    assert problem_with(folder) == "model.safetensors has 60 bytes, the manifest says 100"
    (folder / "model.safetensors").unlink()
    assert problem_with(folder) == "model.safetensors is missing"
    assert problem_with(fake_checkpoint(tmp_path, 20, complete=False)) == (
        "no completion manifest (the save did not finish)"
    )


def test_resume_takes_the_newest_complete_checkpoint(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 5)
    ten = fake_checkpoint(tmp_path, 10)
    broken = fake_checkpoint(tmp_path, 15, complete=False)
    fake_checkpoint(tmp_path, 100)
    (tmp_path / "checkpoint-100" / "model.safetensors").write_bytes(b"")
    newest, incomplete = latest_complete_checkpoint(tmp_path)
    assert newest == ten
    assert incomplete == [broken, tmp_path / "checkpoint-100"]
    assert latest_complete_checkpoint(tmp_path / "nothing-here") == (None, [])


def test_set_aside_keeps_the_files_out_of_the_trainers_way(tmp_path: Path) -> None:
    broken = fake_checkpoint(tmp_path, 15, complete=False)
    kept = move_aside(broken)
    assert not broken.exists() and kept.name.startswith("incomplete-checkpoint-15-")
    assert (kept / "model.safetensors").read_bytes() == b"w" * 100
    assert latest_complete_checkpoint(tmp_path) == (None, [])


def test_too_little_disk_is_reported_before_training(tmp_path: Path) -> None:
    def nearly_full(_: Path) -> SimpleNamespace:
        return SimpleNamespace(free=3 * 2**30)

    with pytest.raises(RunDirError, match=r"3\.00 GiB free, one checkpoint needs about 16\.00 GiB"):
        check_free_disk(tmp_path, 16 * 2**30, disk_usage=nearly_full)
    check_free_disk(tmp_path, 2 * 2**30, disk_usage=nearly_full)  # fits: no error
    check_free_disk(tmp_path, None, disk_usage=nearly_full)  # size unknown: nothing to check


def test_unwritable_run_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    plan = build_plan(load_recipe(REPO / "recipes" / "mlm-scratch.yaml"), blocker / "run")
    with pytest.raises(RunDirError, match="cannot create the run directory"):
        prepare_run_dir(plan)


def test_from_scratch_keeps_the_old_run_aside(tmp_path: Path) -> None:
    recipe = load_recipe(REPO / "recipes" / "mlm-scratch.yaml")
    run_dir = tmp_path / "run"
    prepare_run_dir(build_plan(recipe, run_dir))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "precious").write_text("keep me")
    other = load_recipe(REPO / "recipes" / "mlm-scratch.yaml", ["training.learning_rate=1e-3"])
    with pytest.raises(RunDirError, match="--from-scratch"):
        prepare_run_dir(build_plan(other, run_dir))
    assert prepare_run_dir(build_plan(other, run_dir), from_scratch=True) is False
    (old,) = tmp_path.glob("run.old-*")
    assert (old / "checkpoints" / "precious").read_text() == "keep me"
    assert "learning_rate: 0.001" in (run_dir / "plan" / "recipe.yaml").read_text()


def test_retention_keeps_the_newest_the_best_and_the_resumed_one(tmp_path: Path) -> None:
    folders = {step: fake_checkpoint(tmp_path, step) for step in (10, 20, 30, 40, 50)}
    broken = fake_checkpoint(tmp_path, 60, complete=False)
    deleted = rotate(tmp_path, keep=2, protected={folders[10], folders[30]})
    assert deleted == [folders[20]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [
        "checkpoint-10",
        "checkpoint-30",
        "checkpoint-40",
        "checkpoint-50",
        "checkpoint-60",
    ]
    assert broken.exists(), "an incomplete checkpoint is never deleted by retention"
    assert rotate(tmp_path, keep=None, protected=set()) == []


def test_retention_never_leaves_no_complete_checkpoint(tmp_path: Path) -> None:
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 20, complete=False)  # the save in flight
    assert rotate(tmp_path, keep=1, protected=set()) == []
    assert latest_complete_checkpoint(tmp_path)[0] == tmp_path / "checkpoint-10"
