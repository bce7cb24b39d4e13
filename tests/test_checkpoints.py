"""Checkpoint completion, resume choice, set-aside of incomplete saves, and the run preflight."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO

from launcher.backends.run_dir import (
    RunDirError,
    check_free_disk,
    checkpoint_bytes,
    prepare_run_dir,
)
from launcher.checkpoints import (
    COMPLETE_MARKER,
    changed_content,
    latest_complete_checkpoint,
    move_aside,
    problem_with,
    read_manifest,
    rotate,
    set_aside_changed,
    write_manifest,
)
from launcher.plan.build import build_plan
from launcher.recipe.loader import load_recipe

GOLDEN_RECIPE = REPO / "tests" / "plan" / "golden" / "recipe.yaml"


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
    (run_dir / "checkpoints" / "checkpoint-2").mkdir(parents=True)  # something to continue from
    (run_dir / "checkpoints" / "checkpoint-2" / "precious").write_text("keep me")
    other = load_recipe(REPO / "recipes" / "mlm-scratch.yaml", ["training.learning_rate=1e-3"])
    with pytest.raises(RunDirError, match="--from-scratch"):
        prepare_run_dir(build_plan(other, run_dir))
    assert prepare_run_dir(build_plan(other, run_dir), from_scratch=True) is False
    (old,) = tmp_path.glob("run.old-*")
    assert (old / "checkpoints" / "checkpoint-2" / "precious").read_text() == "keep me"
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


def test_retention_protects_checkpoints_named_another_way(tmp_path: Path) -> None:
    """The Trainer names the best checkpoint with its own string and the folder may be reached
    through a symbolic link: protection follows the folder, not its spelling."""
    real = tmp_path / "real"
    real.mkdir()
    linked = tmp_path / "linked"
    linked.symlink_to(real)
    for step in (10, 20, 30, 40, 50):
        fake_checkpoint(real, step)
    best = tmp_path / "elsewhere" / ".." / "real" / "checkpoint-10"  # same folder, other path
    resumed = linked / "checkpoint-20"
    deleted = rotate(linked, keep=2, protected={best, resumed})
    assert [p.name for p in deleted] == ["checkpoint-30"]
    assert sorted(p.name for p in real.iterdir()) == [
        "checkpoint-10",
        "checkpoint-20",
        "checkpoint-40",
        "checkpoint-50",
    ]


def test_retention_keeps_exactly_the_newest_when_nothing_is_protected(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20):
        fake_checkpoint(tmp_path, step)
    assert [p.name for p in rotate(tmp_path, keep=1, protected=set())] == [
        "checkpoint-5",
        "checkpoint-10",
        "checkpoint-15",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-20"]


def test_saving_marks_the_checkpoint_complete_and_keeps_the_best_and_the_resumed_one(
    tmp_path: Path,
) -> None:
    """The rank callback after a save at step 50 with keep 2: the best checkpoint (as the
    Trainer names it, a string) and the one this attempt resumed from survive the rotation."""
    from launcher.ranks.callbacks import CheckpointCompletion

    folders = {step: fake_checkpoint(tmp_path, step) for step in (10, 20, 30, 40)}
    newest = fake_checkpoint(tmp_path, 50, complete=False)  # just written by every rank
    waits: list[str] = []
    accelerate_state = SimpleNamespace(
        num_processes=4,
        is_local_main_process=True,
        wait_for_everyone=lambda: waits.append("barrier"),
    )
    callback = CheckpointCompletion(accelerate_state, keep=2, resumed_from=folders[20])
    trainer_state = SimpleNamespace(
        global_step=50, is_world_process_zero=True, best_model_checkpoint=str(folders[10])
    )
    args = SimpleNamespace(output_dir=str(tmp_path))
    callback.on_save(args, trainer_state, SimpleNamespace())
    assert waits == ["barrier", "barrier"]
    assert problem_with(newest) is None
    assert json.loads((newest / COMPLETE_MARKER).read_text())["world_size"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-10",
        "checkpoint-20",
        "checkpoint-40",
        "checkpoint-50",
    ]


def test_a_file_that_grew_since_its_manifest_is_refused(tmp_path: Path) -> None:
    """A file written to again after the manifest (a save into an existing folder) is not the
    file the manifest vouched for, bigger or smaller."""
    older = fake_checkpoint(tmp_path, 10)
    folder = fake_checkpoint(tmp_path, 20)
    (folder / "model.safetensors").write_bytes(b"w" * 150)
    assert problem_with(folder) == "model.safetensors has 150 bytes, the manifest says 100"
    assert latest_complete_checkpoint(tmp_path) == (older, [folder])


@pytest.mark.parametrize(
    "content",
    [
        b'{"step": 20, "world_size": 2, "files": {"model.safe',
        b"",
        b"\xff\xfe\x00\x81",
        b"null",
        b"[]",
        b'{"files": null}',
        b'{"files": ["model.safetensors"]}',
        b'{"files": {"model.safetensors": "100"}}',
    ],
    ids=[
        "cut-short",
        "empty",
        "not-utf8",
        "null",
        "a-list",
        "no-files",
        "files-a-list",
        "text-size",
    ],
)
def test_a_corrupt_manifest_means_incomplete_not_a_crash(tmp_path: Path, content: bytes) -> None:
    older = fake_checkpoint(tmp_path, 10)
    folder = fake_checkpoint(tmp_path, 20)
    (folder / COMPLETE_MARKER).write_bytes(content)
    assert read_manifest(folder) is None
    assert problem_with(folder) == "no completion manifest (the save did not finish)"
    assert latest_complete_checkpoint(tmp_path) == (older, [folder])
    assert rotate(tmp_path, keep=1, protected=set()) == [], "never deleted as a complete one"
    assert folder.exists()


# --- the disk estimate ----------------------------------------------------------------------------

# The golden recipe's model (tests/plan/golden/recipe.yaml), counted by hand: embeddings and untied
# head 2 x 1000 x 256; per layer q 256x256, k and v 256x128 (2 of 4 heads), o 256x256, gate, up
# and down 256x512, two norms of 256; a final norm of 256.
EMBEDDING = 1000 * 256
LAYER_MATRICES = [256 * 256, 256 * 128, 256 * 128, 256 * 256, 256 * 512, 256 * 512, 256 * 512]
NORMS = 2 * 2 * 256 + 256
GOLDEN_PARAMETERS = 2 * EMBEDDING + 2 * sum(LAYER_MATRICES) + NORMS


def eight_bit_states(n: int) -> int:
    """bitsandbytes 8-bit Adam per tensor: two uint8 states and an fp32 scale per 256 values of
    each; a tensor under 4096 values keeps two fp32 states."""
    return 8 * n if n < 4096 else 2 * n + 2 * 4 * -(-n // 256)


QUANTIZATION_MAPS = 2 * 256 * 4


@pytest.mark.parametrize(
    "overrides,expected",
    [
        # fp32 weights 4 + Adam's two fp32 moments 8 bytes per parameter
        ([], 12 * GOLDEN_PARAMETERS),
        (["distributed.strategy=deepspeed", "distributed.zero_stage=3"], 12 * GOLDEN_PARAMETERS),
        (["training.optimizer=sgd"], 4 * GOLDEN_PARAMETERS),  # no momentum: weights only
        (["training.optimizer=adafactor"], 8 * GOLDEN_PARAMETERS),  # counted as 4 bytes of state
        # The Trainer keeps the embedding's states in 32 bits, every other tensor in 8.
        (
            ["training.optimizer=adamw_8bit"],
            4 * GOLDEN_PARAMETERS
            + 8 * EMBEDDING
            + eight_bit_states(EMBEDDING)
            + 2 * sum(eight_bit_states(n) for n in LAYER_MATRICES)
            + 5 * eight_bit_states(256)
            + QUANTIZATION_MAPS,
        ),
        # Under DeepSpeed the optimizer sees two flat groups: decayed matrices, undecayed norms.
        (
            [
                "training.optimizer=paged_adamw_8bit",
                "distributed.strategy=deepspeed",
                "distributed.zero_stage=2",
            ],
            4 * GOLDEN_PARAMETERS
            + eight_bit_states(GOLDEN_PARAMETERS - NORMS)
            + eight_bit_states(NORMS)
            + QUANTIZATION_MAPS,
        ),
    ],
    ids=["adamw", "adamw-zero3", "sgd", "adafactor", "adamw_8bit", "paged_8bit-zero2"],
)
def test_checkpoint_size_estimate_by_hand(overrides: list[str], expected: int) -> None:
    assert GOLDEN_PARAMETERS == 1_692_928
    plan = build_plan(load_recipe(GOLDEN_RECIPE, overrides), Path("/runs/size"))
    assert checkpoint_bytes(plan) == expected


def test_checkpoint_size_of_a_model_of_unknown_size_is_not_guessed() -> None:
    recipe = load_recipe(GOLDEN_RECIPE, ["model.pretrained=org/model", "model.config={}"])
    assert checkpoint_bytes(build_plan(recipe, Path("/runs/size"), exists=lambda p: False)) is None


def test_free_disk_boundary(tmp_path: Path) -> None:
    def exactly(_: Path) -> SimpleNamespace:
        return SimpleNamespace(free=1000)

    def one_byte_short(_: Path) -> SimpleNamespace:
        return SimpleNamespace(free=999)

    check_free_disk(tmp_path, 1000, disk_usage=exactly)  # exactly one checkpoint fits
    with pytest.raises(RunDirError, match="999 B free, one checkpoint needs about 1000 B"):
        check_free_disk(tmp_path, 1000, disk_usage=one_byte_short)


def test_run_directory_preflight_uses_the_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``prepare_run_dir`` refuses a run whose one checkpoint (12 bytes per parameter with
    AdamW in fp32 states) would not fit, and accepts it with exactly that much free."""
    import launcher.backends.run_dir as run_dir

    needed = 12 * GOLDEN_PARAMETERS
    plan = build_plan(load_recipe(GOLDEN_RECIPE), tmp_path / "run")
    free = {"bytes": needed - 1}
    monkeypatch.setattr(
        run_dir.check_free_disk,
        "__defaults__",
        (lambda _: SimpleNamespace(free=free["bytes"]),),
    )
    with pytest.raises(RunDirError, match=r"one checkpoint needs about 19\.37 MiB"):
        prepare_run_dir(plan)
    free["bytes"] = needed
    assert prepare_run_dir(plan) is False


def test_the_manifest_records_each_files_checksum(tmp_path: Path) -> None:
    import xxhash

    folder = fake_checkpoint(tmp_path, 10)
    manifest = read_manifest(folder)
    assert manifest is not None and manifest["checksum"] == "xxh3_64-blocks"
    # One block each here: the file's checksum is the xxh3 of its one block's digest.
    assert manifest["checksums"] == {
        name: xxhash.xxh3_64(xxhash.xxh3_64((folder / name).read_bytes()).digest()).hexdigest()
        for name in manifest["files"]
    }
    assert changed_content(folder) is None
    write_manifest(folder, 10, world_size=2, checksums=False)  # checkpointing.verify_checksums
    assert "checksums" not in (read_manifest(folder) or {})


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_bytes_changed_at_the_same_size_set_the_checkpoint_aside(tmp_path: Path) -> None:
    """A flipped byte passes the size check; the checksum catches it, and resume goes back to
    the newest checkpoint whose bytes are the ones saved. Nothing is deleted."""
    good = fake_checkpoint(tmp_path, 10)
    changed = [fake_checkpoint(tmp_path, step) for step in (20, 30)]
    for folder in changed:
        flip_a_byte(folder / "global_step1" / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
        assert problem_with(folder) is None  # sizes still match
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt's bytes changed" in str(
        changed_content(changed[1])
    )
    moved = set_aside_changed(tmp_path)
    assert [(folder, kept.name.rsplit("-", 1)[0]) for folder, _, kept in moved] == [
        (changed[1], "incomplete-checkpoint-30"),
        (changed[0], "incomplete-checkpoint-20"),
    ]
    assert all(kept.is_dir() for _, _, kept in moved)
    assert latest_complete_checkpoint(tmp_path) == (good, [])
    assert set_aside_changed(tmp_path) == []  # the good one is read once more, and kept


def test_resume_verifies_only_when_the_recipe_asks(tmp_path: Path) -> None:
    """`choose_checkpoint` in the ranks: the main process reads the newest back (with
    `verify_checksums`), the others wait at the barrier; without it a changed one is used."""
    from launcher.checkpoints import choose_checkpoint

    fake_checkpoint(tmp_path, 10)
    newest = fake_checkpoint(tmp_path, 20)
    flip_a_byte(newest / "model.safetensors")
    waits: list[str] = []
    state = SimpleNamespace(
        is_main_process=True,
        is_local_main_process=True,
        wait_for_everyone=lambda: waits.append("barrier"),
    )
    assert choose_checkpoint(tmp_path, state, on_each_node=False, verify=False) == newest
    assert choose_checkpoint(tmp_path, state, on_each_node=False) == tmp_path / "checkpoint-10"
    assert [p.name.rsplit("-", 1)[0] for p in tmp_path.glob("incomplete-*")] == [
        "incomplete-checkpoint-20"
    ]


def test_export_refuses_a_checkpoint_whose_bytes_changed(tmp_path: Path) -> None:
    from launcher.contract import RunLayout
    from launcher.errors import LauncherError
    from launcher.export import choose_checkpoint

    layout = RunLayout(tmp_path)
    fake_checkpoint(layout.checkpoints_dir, 10)
    newest = fake_checkpoint(layout.checkpoints_dir, 20)
    flip_a_byte(newest / "model.safetensors")
    with pytest.raises(LauncherError) as refused:
        choose_checkpoint(layout, None)
    message = str(refused.value)
    assert f"{newest}: model.safetensors's bytes changed" in message
    assert "at steps: 10; pick one with --checkpoint" in message
    assert choose_checkpoint(layout, 10) == layout.checkpoints_dir / "checkpoint-10"


def test_a_change_in_a_later_block_of_a_big_file_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are hashed in blocks (on every core at once); a byte flipped in the third block of a
    file, or a block moved, changes its checksum."""
    import launcher.checkpoints as checkpoints

    monkeypatch.setattr(checkpoints, "BLOCK_BYTES", 1000)
    monkeypatch.setattr(checkpoints, "CHUNK_BYTES", 300)
    folder = tmp_path / "checkpoint-1"
    folder.mkdir()
    data = bytes(range(256)) * 20  # 5120 bytes: six blocks
    (folder / "optimizer.pt").write_bytes(data)
    write_manifest(folder, 1, world_size=1)
    assert changed_content(folder) is None
    flipped = bytearray(data)
    flipped[2500] ^= 0x01
    (folder / "optimizer.pt").write_bytes(bytes(flipped))
    assert "optimizer.pt's bytes changed" in str(changed_content(folder))
    (folder / "optimizer.pt").write_bytes(data[1000:2000] + data[:1000] + data[2000:])
    assert changed_content(folder) is not None
