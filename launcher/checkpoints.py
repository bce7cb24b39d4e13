"""Which checkpoints of a run are complete; light enough for login nodes and node tasks.

A checkpoint counts as complete only once its manifest, ``launcher-complete.json``, exists: every
rank has returned from saving (a barrier), then global rank 0 lists each file with its size,
flushes the list to disk and renames it into place (``write_manifest``). A checkpoint is used only
when every file of its manifest is there with that size. A run killed while saving leaves a folder
without a manifest (or with files that do not match it): resume skips it, names it, and moves it
aside so that the resumed run never writes into it; nothing is deleted.

The manifest also records a checksum of each file (xxh3-64 of 64 MiB blocks, hashed on every
core; see
``benchmarks/RESULTS.md`` for its cost against the save). Before a resume, one process per storage
reads the newest complete checkpoint back and sets it aside when a file's bytes changed while its
size stayed the same (a flaky shared file system), then tries the one before.
``checkpointing.verify_checksums: false`` skips both for very large checkpoints.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from launcher.errors import LauncherError
from launcher.files import write_text_atomic

COMPLETE_MARKER = "launcher-complete.json"
SET_ASIDE_PREFIX = "incomplete-"


def checkpoint_step(folder: Path) -> int | None:
    """``checkpoint-120`` -> 120; None for anything else."""
    prefix, _, number = folder.name.rpartition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else None


CHECKSUM = "xxh3_64-blocks"  # xxh3-64 of each 64 MiB block, then of the blocks' digests
BLOCK_BYTES = 64 << 20
CHUNK_BYTES = 1 << 20  # reads that fit the CPU cache: 2x the throughput of 8 MiB reads here


def block_digest(path: Path, start: int) -> bytes:
    """xxh3-64 of one block of a file, hashed in cache-sized chunks straight from the page cache
    (a memory map: no copy into Python; 1.2-1.5x the throughput of reading it here), or read
    where a file cannot be mapped. Either way the digest is the same."""
    import xxhash

    digest = xxhash.xxh3_64()
    length = min(BLOCK_BYTES, path.stat().st_size - start)
    if length > 0:
        try:
            with (
                open(path, "rb") as stream,
                mmap.mmap(stream.fileno(), length, access=mmap.ACCESS_READ, offset=start) as mapped,
            ):
                with memoryview(mapped) as view:
                    for offset in range(0, length, CHUNK_BYTES):
                        digest.update(view[offset : offset + CHUNK_BYTES])
            return digest.digest()
        except (OSError, ValueError):
            digest = xxhash.xxh3_64()  # a file system without mmap: read it instead
    with open(path, "rb") as stream:
        stream.seek(start)
        left = BLOCK_BYTES
        while left and (chunk := stream.read(min(CHUNK_BYTES, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.digest()


def file_checksums(folder: Path, names: list[str]) -> dict[str, str]:
    """The checksum of each file: its blocks are hashed on every core at once (xxhash releases
    the GIL), so that reading a checkpoint back costs a fraction of writing it, even when one
    file holds most of its bytes."""
    import xxhash

    blocks = [
        (name, start)
        for name in names
        for start in range(0, max((folder / name).stat().st_size, 1), BLOCK_BYTES)
    ]
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        digests = list(pool.map(lambda block: block_digest(folder / block[0], block[1]), blocks))
    joined: dict[str, xxhash.xxh3_64] = {name: xxhash.xxh3_64() for name in names}
    for (name, _), digest in zip(blocks, digests, strict=True):
        joined[name].update(digest)
    return {name: digest.hexdigest() for name, digest in joined.items()}


def write_manifest(folder: Path, step: int, world_size: int, checksums: bool = True) -> None:
    """Record ``folder`` as complete: its files, sizes (and checksums), written last and
    atomically."""
    paths = [
        path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(f".{COMPLETE_MARKER}")
    ]
    files = {str(path.relative_to(folder)): path.stat().st_size for path in paths}
    manifest: dict[str, Any] = {
        "step": step, "world_size": world_size, "time": time.time(), "files": files,
    }  # fmt: skip
    if checksums:
        manifest["checksum"] = CHECKSUM
        manifest["checksums"] = file_checksums(folder, list(files))
    write_text_atomic(folder / COMPLETE_MARKER, json.dumps(manifest, indent=1), durable=True)


def changed_content(folder: Path) -> str | None:
    """Which file of a complete checkpoint no longer has the bytes its manifest recorded, or
    None (also for manifests written without checksums)."""
    manifest = read_manifest(folder) or {}
    recorded = manifest.get("checksums")
    if manifest.get("checksum") != CHECKSUM or not isinstance(recorded, dict):
        return None
    if not all((folder / name).is_file() for name in recorded):
        return "a file its checksums name is missing"
    found_all = file_checksums(folder, list(recorded))
    for name, expected in recorded.items():
        found = found_all[name]
        if found != expected:
            return (
                f"{name}'s bytes changed since it was saved ({CHECKSUM} {found}, the manifest "
                f"says {expected}) although its size did not"
            )
    return None


def set_aside_changed(checkpoints: Path) -> list[tuple[Path, str, Path]]:
    """Read the newest complete checkpoints back, newest first, until one has the bytes its
    manifest records; set aside (rename, never delete) each one that does not. Returns
    (checkpoint, what changed, where it is kept)."""
    changed = []
    for folder in reversed(complete_checkpoints(checkpoints)):
        reason = changed_content(folder)
        if reason is None:
            break
        changed.append((folder, reason, move_aside(folder)))
    return changed


def read_manifest(folder: Path) -> dict | None:
    """The manifest of ``folder``, or None when it is missing or not one (cut short, or changed
    by something else: a checkpoint whose manifest cannot be trusted is incomplete)."""
    try:
        manifest = json.loads((folder / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(name, str) and isinstance(size, int) for name, size in files.items()
    ):
        return None
    return manifest


def problem_with(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from, or None when its manifest checks out."""
    manifest = read_manifest(folder)
    if manifest is None:
        return "no completion manifest (the save did not finish)"
    for name, size in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the manifest says {size}"
    return None


def list_checkpoints(checkpoints: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder of ``checkpoints``, oldest step first (the one listing rule:
    resume, retention, export and status all read checkpoints through it)."""
    folders = [p for p in checkpoints.glob("checkpoint-*") if checkpoint_step(p) is not None]
    return sorted(folders, key=lambda p: checkpoint_step(p) or 0)


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The complete checkpoints of a folder, oldest first."""
    return [p for p in list_checkpoints(checkpoints) if problem_with(p) is None]


def latest_complete_checkpoint(checkpoints: Path) -> tuple[Path | None, list[Path]]:
    """The newest complete checkpoint, and the incomplete ones (newest last)."""
    folders = list_checkpoints(checkpoints)
    complete = [p for p in folders if problem_with(p) is None]
    return (complete[-1] if complete else None), [p for p in folders if p not in complete]


def rotate(checkpoints: Path, keep: int | None, protected: set[Path]) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep``, never one in ``protected`` (the
    best one, the one this attempt resumed from); return what was deleted. Runs only after the
    newest checkpoint's manifest is written, so a complete checkpoint always remains."""
    if keep is None:
        return []
    complete = complete_checkpoints(checkpoints)
    keep_set = set(complete[-keep:]) | {p.resolve() for p in protected} | set(protected)
    doomed = [p for p in complete if p not in keep_set and p.resolve() not in keep_set]
    for folder in doomed:
        shutil.rmtree(folder)
    return doomed


def move_aside(folder: Path) -> Path:
    """Rename an incomplete checkpoint out of the Trainer's way (it would save into it again);
    nothing is deleted."""
    target = folder.with_name(f"{SET_ASIDE_PREFIX}{folder.name}-{int(time.time())}")
    folder.rename(target)
    return target


# --- resume, inside the ranks (torch is imported there only) ------------------------------------


def choose_checkpoint(
    folder: Path, state: Any, on_each_node: bool, verify: bool = True
) -> Path | None:
    """The newest complete checkpoint (with node-local storage: the newest one complete on every
    node); incomplete ones, and with ``verify`` ones whose bytes changed, are named and moved
    aside, not deleted."""
    mover = state.is_local_main_process if on_each_node else state.is_main_process
    if verify and mover:  # one reader per storage; the others wait at the barrier below
        for changed, reason, kept in set_aside_changed(folder):
            print(
                f"[launcher] warning: skipping {changed.name}: {reason}; kept as {kept}",
                flush=True,
            )
    state.wait_for_everyone()
    resume, skipped = latest_complete_checkpoint(folder)
    if on_each_node:
        resume, newer = checkpoint_on_every_node(folder, resume, state)
        skipped = [*skipped, *newer]
    state.wait_for_everyone()  # every rank has chosen before anything is moved
    for skipped_folder in skipped:
        reason = problem_with(skipped_folder) or "not complete on every node"
        if mover:
            kept = move_aside(skipped_folder)
            print(
                f"[launcher] warning: skipping incomplete {skipped_folder.name} ({reason}); "
                f"kept as {kept}",
                flush=True,
            )
    state.wait_for_everyone()
    return resume


def checkpoint_on_every_node(
    folder: Path, newest: Path | None, state: Any
) -> tuple[Path | None, list[Path]]:
    """With node-local storage each node sees only its own disk: agree on the newest step that
    is complete everywhere, and return it with this node's newer ones (to set aside)."""
    import torch.distributed as dist

    from launcher.contract import this_node

    mine = [checkpoint_step_of(p) for p in complete_checkpoints(folder)]
    everyone: list[Any] = [None] * state.num_processes
    if dist.is_available() and dist.is_initialized():
        dist.all_gather_object(everyone, (this_node(), mine))
    else:
        everyone = [(this_node(), mine)]
    common = set.intersection(*(set(steps) for _, steps in everyone))
    if not common and any(steps for _, steps in everyone):
        held = "; ".join(
            f"{node}: {steps or 'none'}"
            for node, steps in sorted(set((node, tuple(steps)) for node, steps in everyone))
        )
        raise LauncherError(
            f"node-local checkpoints disagree ({held}): no step is complete on every node of "
            "this attempt, so it runs on other nodes than the ones that saved. Checkpoints stay "
            "on the disks of the nodes that wrote them: resubmit on those nodes, or copy each "
            f"node's {folder.name} folders to every node; `--from-scratch` starts over."
        )
    step = max(common) if common else None
    chosen = folder / f"checkpoint-{step}" if step is not None else None
    return chosen, [folder / f"checkpoint-{s}" for s in mine if step is None or s > step]


def checkpoint_step_of(folder: Path) -> int:
    step = checkpoint_step(folder)
    assert step is not None
    return step


def training_finished(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is the last step of its run (killed before the final save)."""
    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    return 0 < trainer_state.get("max_steps", 0) <= trainer_state.get("global_step", 0)


def check_resume_world(
    zero_stage: int | None, resume: Path | None, world_size: int, run_dir: Path
) -> None:
    """ZeRO shards belong to the world size that wrote them: refuse another one before training.

    DDP checkpoints hold whole weights and optimizer states, so they load on any world size.
    """
    if resume is None or zero_stage is None:
        return
    written_by = (read_manifest(resume) or {}).get("world_size", world_size)
    if written_by != world_size:
        raise LauncherError(
            f"{resume.name} holds DeepSpeed ZeRO-{zero_stage} shards written "
            f"by {written_by} ranks, but this run has {world_size}. The shards split optimizer "
            "states by rank, and a different world size cannot load them as they are. Either "
            f"run with {written_by} ranks again, or export the weights "
            f"(`launcher export {run_dir} -o DIR`) and start a new run from them "
            "(model.pretrained=DIR); the optimizer states start fresh then."
        )
