"""Turn one checkpoint of a run into one Hugging Face model folder.

    launcher export runs/sft-mistral-smoke -o exported/sft-mistral
    launcher export runs/sft-mistral-smoke --checkpoint 200 -o exported/sft-mistral-200

The folder holds ``model.safetensors`` (sharded with an index only when large), ``config.json``,
the generation config where the model generates, and the run's tokenizer; it loads with the task's
``AutoModelFor...from_pretrained``.

Where the weights come from:
- a DDP checkpoint holds the model's own ``model.safetensors``;
- a DeepSpeed checkpoint holds ZeRO shards, whose fp32 master weights are the truth. Its
  ``model.safetensors``, when there is one, may be 16-bit (ZeRO-3 gathers 16-bit weights on save;
  with bf16 training they are bf16), so it is never used.

Before the folder appears under its name, every exported tensor is compared with that truth and
must be exactly equal; the export is written to a temporary sibling folder and renamed at the end,
so a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.checkpoints import (
    changed_content,
    checkpoint_step,
    list_checkpoints,
    problem_with,
)
from launcher.contract import RunLayout
from launcher.errors import LauncherError
from launcher.outputs import output_folder
from launcher.recipe.schema import TASKS

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


@dataclass
class Loaded:
    """A model rebuilt from a checkpoint, and the tensors it must equal once exported."""

    model: Any
    truth: dict[str, Any]
    source: str  # e.g. "DeepSpeed ZeRO-3 fp32 master weights"
    note: str = ""


def export_checkpoint(
    run_dir: Path, output: Path, step: int | None = None, merge: bool = False
) -> Path:
    """Export ``checkpoint-{step}`` (default: the newest complete one) of ``run_dir`` to ``output``
    (a LoRA run: its adapter, or with ``merge`` the base model with the adapter merged in)."""
    layout = RunLayout(Path(run_dir))
    recipe = read_recipe(layout)
    checkpoint = choose_checkpoint(layout, step)
    output = Path(output).expanduser()
    # A new folder, or an empty one: the export is staged beside it and renamed into place.
    output_folder(
        output if output.exists() else output.parent,
        "the exported model",
        must_be_empty=output.exists(),
    )
    if not layout.tokenizer_dir.is_dir():
        raise LauncherError(
            f"{layout.tokenizer_dir} is missing: the run saves its tokenizer there before step 1. "
            f"Export the run's final model folder {layout.model_dir} instead, if it has one."
        )

    output.parent.mkdir(parents=True, exist_ok=True)
    from launcher.export_adapter import export_adapter, is_adapter_checkpoint

    if is_adapter_checkpoint(checkpoint):
        written, source = export_adapter(layout, checkpoint, output, recipe.task, merge)
        print(
            f"exported step {checkpoint_step(checkpoint)} of {layout.root} ({source}): {written} -> {output}"
        )
        return output
    if merge:
        raise LauncherError(
            f"--merge: {checkpoint} holds a whole model, not a LoRA adapter; export it without "
            "--merge"
        )
    loaded = load_checkpoint(checkpoint, recipe)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        loaded.model.save_pretrained(staging)
        copy_tokenizer(layout.tokenizer_dir, staging)
        compare_export(loaded, staging)
        if output.exists():
            output.rmdir()  # empty, checked above
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print(summary_line(layout, checkpoint, loaded, output))
    return output


def summary_line(layout: RunLayout, checkpoint: Path, loaded: Loaded, output: Path) -> str:
    """What the export produced, from what, and where: the last line ``launcher export`` prints."""
    from launcher.units import format_bytes

    count = sum(p.numel() for p in loaded.model.parameters())  # tied weights count once
    files = weight_files(output)
    size = format_bytes(sum(path.stat().st_size for path in files))
    where = files[0] if len(files) == 1 else f"{output} ({len(files)} shards)"
    return (
        f"exported step {checkpoint_step(checkpoint)} of {layout.root} ({loaded.source}): "
        f"{len(loaded.truth)} tensors, {count:,} parameters, {size}, each equal to the "
        f"checkpoint's -> {where}{loaded.note}"
    )


@dataclass(frozen=True)
class RecipeFacts:
    """The few fields of a run's resolved recipe an export needs (read leniently: old runs too)."""

    task: str
    zero_stage: int
    trust_remote_code: bool


def read_recipe(layout: RunLayout) -> RecipeFacts:
    import yaml

    if not layout.recipe_file.is_file():
        raise LauncherError(
            f"{layout.root} is not a launcher run directory (no {layout.recipe_file}). "
            "Pass the folder that `launcher run` trained in (its --run-dir, default runs/NAME)."
        )
    data = yaml.safe_load(layout.recipe_file.read_text()) or {}
    task = data.get("task")
    if task not in TASKS:
        raise LauncherError(f"{layout.recipe_file}: task {task!r} is not one of {', '.join(TASKS)}")
    return RecipeFacts(
        task=task,
        zero_stage=int((data.get("distributed") or {}).get("zero_stage", 0)),
        trust_remote_code=bool((data.get("model") or {}).get("trust_remote_code", False)),
    )


def choose_checkpoint(layout: RunLayout, step: int | None) -> Path:
    """The newest complete checkpoint, or ``checkpoint-{step}``, which must be complete (its
    manifest present, every file in it with the size and, where recorded, the checksum that the
    manifest records)."""
    chosen = complete_checkpoint(layout, step)
    changed = changed_content(chosen)
    if changed:
        others = [checkpoint_step(p) for p in list_checkpoints(layout.checkpoints_dir)]
        steps = ", ".join(str(s) for s in others if s != checkpoint_step(chosen)) or "none"
        raise LauncherError(
            f"{chosen}: {changed}, so its weights cannot be trusted. Other checkpoints of this "
            f"run are at steps: {steps}; pick one with --checkpoint."
        )
    return chosen


def complete_checkpoint(layout: RunLayout, step: int | None) -> Path:
    folders = list_checkpoints(layout.checkpoints_dir)
    problems = {folder: problem_with(folder) for folder in folders}
    complete = [p for p in folders if problems[p] is None]
    steps = ", ".join(str(checkpoint_step(p)) for p in complete) or "none"
    if step is None:
        if not complete:
            skipped = "; ".join(f"{p.name}: {problems[p]}" for p in folders)
            found = f" ({skipped})" if folders else ""
            raise LauncherError(
                f"no complete checkpoint in {layout.checkpoints_dir}{found}. "
                f"Resume the run to write one, or use its final model folder {layout.model_dir} "
                f"if it finished.{node_local_hint(layout)}"
            )
        return complete[-1]
    wanted = layout.checkpoints_dir / f"checkpoint-{step}"
    if not wanted.is_dir():
        raise LauncherError(
            f"no {wanted}; complete checkpoints of this run are at steps: {steps}. "
            "Pick one of those with --checkpoint, or leave it out for the newest."
        )
    if wanted not in complete:
        raise LauncherError(
            f"{wanted} is incomplete ({problems[wanted]}), so its weights cannot be trusted. "
            f"Complete checkpoints are at steps: {steps}; pick one with --checkpoint, or leave "
            "it out for the newest."
        )
    return wanted


def node_local_hint(layout: RunLayout) -> str:
    """How to export a run whose checkpoints stay on its nodes' disks (each holds its own shards)."""
    from launcher.contract import RunContract

    if not layout.contract_file.exists():
        return ""
    contract = RunContract.read(layout.contract_file)
    if not contract.checkpoints_on_each_node:
        return ""
    return (
        f" This run keeps its checkpoints on each node's own disk ({contract.checkpoints_dir}), "
        "and each node holds only its own ranks' shards: copy checkpoint-N from every node into "
        f"{layout.checkpoints_dir}/checkpoint-N (the shards merge; the other files are the same), "
        "then export again."
    )


def load_checkpoint(checkpoint: Path, recipe: RecipeFacts) -> Loaded:
    if (checkpoint / "latest").is_file():
        return load_deepspeed(checkpoint, recipe.task, recipe.trust_remote_code, recipe.zero_stage)
    if weight_files(checkpoint):
        return load_saved_model(checkpoint, recipe.task, recipe.trust_remote_code)
    raise LauncherError(
        f"{checkpoint} holds neither {WEIGHTS_FILE} (DDP) nor DeepSpeed shards (a `latest` file); "
        "nothing to export from it."
    )


def load_saved_model(checkpoint: Path, task: str, trust_remote_code: bool) -> Loaded:
    """DDP: the checkpoint is already a model folder; load it as stored (dtype ``auto``)."""
    from launcher.ranks.model import auto_class

    model, info = auto_class(task).from_pretrained(
        checkpoint, dtype="auto", trust_remote_code=trust_remote_code, output_loading_info=True
    )
    problems = {
        key: info.get(key) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    problems = {key: value for key, value in problems.items() if value}
    if problems:
        listed = "; ".join(
            f"{key}: {sorted(map(str, value))[:8]}" for key, value in problems.items()
        )
        raise LauncherError(f"{checkpoint} does not match its own config.json ({listed})")
    return Loaded(model, read_weights(checkpoint), "DDP checkpoint weights")


def load_deepspeed(checkpoint: Path, task: str, trust_remote_code: bool, stage: int) -> Loaded:
    """DeepSpeed: rebuild the model from config.json and load the weights of the shards."""
    import torch
    from transformers import AutoConfig, GenerationConfig

    from launcher.ranks.model import auto_class

    tag = (checkpoint / "latest").read_text().strip()
    if not (checkpoint / tag).is_dir():
        raise LauncherError(f"{checkpoint}/latest names {tag!r}, which is not a folder there")
    loaded = deepspeed_weights(checkpoint, tag, stage)

    dtypes = {tensor.dtype for tensor in loaded.truth.values()}
    config = AutoConfig.from_pretrained(checkpoint, trust_remote_code=trust_remote_code)
    loaded.model = auto_class(task).from_config(
        config,
        dtype=dtypes.pop() if len(dtypes) == 1 else torch.float32,
        trust_remote_code=trust_remote_code,
    )
    load_exactly(loaded.model, loaded.truth, checkpoint / tag)
    if (checkpoint / "generation_config.json").is_file() and loaded.model.can_generate():
        loaded.model.generation_config = GenerationConfig.from_pretrained(checkpoint)
    return loaded


def deepspeed_weights(checkpoint: Path, tag: str, stage: int) -> Loaded:
    """The weights of a DeepSpeed checkpoint by name (``Loaded.model`` still to be built)."""
    import torch

    if any((checkpoint / tag).glob("*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=tag)
        except Exception as error:
            raise LauncherError(
                f"DeepSpeed could not rebuild fp32 weights from {checkpoint / tag}: {error}"
            ) from error
        source = f"DeepSpeed ZeRO-{stage} fp32 master weights from {tag}"
        return Loaded(None, dict(state), source, note=sixteen_bit_note(checkpoint))
    # ZeRO-0 writes no optimizer shards; its module weights are the model. With 16-bit training
    # its fp32 masters sit in the optimizer's unnamed parameter groups, which cannot be matched
    # to names reliably, so the 16-bit weights the model computes with are exported, and said so.
    states = torch.load(
        checkpoint / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
    )
    state = dict(states["module"])
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state.values()})
    source = f"DeepSpeed ZeRO-{stage} module weights ({'/'.join(dtypes)}) from {tag}"
    note = ""
    if dtypes != ["float32"]:
        note = "; note: ZeRO-0 keeps no named fp32 copy, so these are its 16-bit module weights"
    return Loaded(None, state, source, note)


def load_exactly(model: Any, state: dict[str, Any], source: Path) -> None:
    """``load_state_dict(strict=True)``, after filling in tied names (``lm_head`` = embeddings)."""
    expected = model.state_dict()
    aliases = tied_aliases(model)
    filled = dict(state)
    for name in expected:
        if name not in filled:
            alias = next((a for a in aliases.get(name, ()) if a in filled), None)
            if alias is not None:
                filled[name] = filled[alias]
    missing = sorted(set(expected) - set(filled))
    unexpected = sorted(set(filled) - set(expected))
    if missing or unexpected:
        raise LauncherError(
            f"the weights in {source} do not fit the model of config.json: "
            f"missing {missing[:8]} ({len(missing)}), unexpected {unexpected[:8]} ({len(unexpected)})"
        )
    try:
        model.load_state_dict(filled, strict=True)
    except RuntimeError as error:  # shape mismatches
        raise LauncherError(
            f"the weights in {source} do not fit the model of config.json: {error}"
        ) from error


def tied_aliases(model: Any) -> dict[str, set[str]]:
    """Name -> the other names of the same parameter object (tied weights)."""
    groups: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), []).append(name)
    return {name: set(names) - {name} for names in groups.values() for name in names}


def copy_tokenizer(tokenizer_dir: Path, folder: Path) -> None:
    """The run's own tokenizer files, copied as they are (a file the model wrote wins)."""
    for path in tokenizer_dir.iterdir():
        target = folder / path.name
        if target.exists():
            continue
        if path.is_dir():
            shutil.copytree(path, target)
        else:
            shutil.copy2(path, target)


def compare_export(loaded: Loaded, folder: Path) -> None:
    """Every tensor of the truth must be in the export, exactly (a tied name through its alias)."""
    import torch
    from tqdm import tqdm

    saved = read_weights(folder)
    aliases = tied_aliases(loaded.model)
    problems, covered = [], set()
    # A bar on a terminal only (disable=None); large models take a while tensor by tensor.
    checking = tqdm(loaded.truth.items(), desc="checking tensors", unit="tensor", disable=None)
    for name, want in checking:
        key = (
            name if name in saved else next((a for a in aliases.get(name, ()) if a in saved), None)
        )
        if key is None:
            problems.append(f"{name}: not in the export")
            continue
        covered.add(key)
        got = saved[key]
        if got.shape != want.shape or got.dtype != want.dtype:
            problems.append(
                f"{name}: {got.dtype}{list(got.shape)} vs {want.dtype}{list(want.shape)}"
            )
        elif not torch.equal(got, want):
            diff = (got.double() - want.double()).abs().max().item()
            problems.append(f"{name}: max abs diff {diff:.3g}")
    problems += [f"{name}: not in the checkpoint" for name in sorted(set(saved) - covered)]
    if problems:
        raise LauncherError(
            f"the export differs from the checkpoint in {len(problems)} tensor(s), nothing "
            "written: " + "; ".join(problems[:10])
        )


def weight_files(folder: Path) -> list[Path]:
    if (folder / WEIGHTS_INDEX).is_file():
        weight_map = json.loads((folder / WEIGHTS_INDEX).read_text())["weight_map"]
        return [folder / name for name in sorted(set(weight_map.values()))]
    return [folder / WEIGHTS_FILE] if (folder / WEIGHTS_FILE).is_file() else []


def read_weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    weights: dict[str, Any] = {}
    for path in weight_files(folder):
        weights.update(load_file(str(path)))
    return weights


def stored_dtypes(path: Path) -> set[str]:
    """The dtypes of a safetensors file, from its JSON header (no tensor is read)."""
    with path.open("rb") as stream:
        size = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(size))
    return {entry["dtype"] for key, entry in header.items() if key != "__metadata__"}


def sixteen_bit_note(checkpoint: Path) -> str:
    dtypes = set().union(*(stored_dtypes(path) for path in weight_files(checkpoint)))
    low = sorted(dtypes - {"F32"})
    if not low:
        return ""
    return (
        f"; note: the checkpoint's own {WEIGHTS_FILE} is {'/'.join(low)}, "
        "the export has the fp32 master weights"
    )
