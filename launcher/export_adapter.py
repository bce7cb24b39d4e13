"""``launcher export`` of a LoRA run: the adapter in PEFT format, or (``--merge``) one model.

    launcher export runs/sft-lora -o exported/adapter            # loads with PeftModel
    launcher export runs/sft-lora --merge -o exported/merged     # loads with AutoModelFor...

The adapter's tensors come from the checkpoint's truth: a DDP checkpoint's own
``adapter_model.safetensors``; for DeepSpeed, the fp32 master weights in the ZeRO shards (the
checkpoint's adapter file may be 16-bit). The written adapter is read back and compared tensor by
tensor. A merged model is the base (unquantized, as QLoRA merges) with the adapter folded into its
weights (``merge_and_unload``); before it is written, its logits on a sample batch must equal the
base-plus-adapter logits within ``MERGE_TOLERANCE``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from launcher.contract import RunLayout
from launcher.errors import LauncherError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Largest |logit| difference allowed between base+adapter and the merged model, in fp32: the
# merge adds B·A·scale into each weight, so only rounding of that sum differs.
MERGE_TOLERANCE = 1e-4
SAMPLE_SHAPE = (2, 16)  # the sample batch of token ids the merge is checked on


def is_adapter_checkpoint(folder: Path) -> bool:
    return (folder / ADAPTER_CONFIG).is_file()


def base_model_path(folder: Path) -> str:
    """The base an adapter folder names (a run's ``base-model`` folder, or a hub id)."""
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise LauncherError(f"{folder / ADAPTER_CONFIG} names no base model")
    return base


def adapter_truth(checkpoint: Path) -> tuple[dict[str, Any], str]:
    """The adapter's tensors by their PEFT names, and where they came from."""
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint / ADAPTER_WEIGHTS))
    latest = checkpoint / "latest"
    if not latest.is_file():
        return saved, "DDP checkpoint adapter weights"
    tag = latest.read_text().strip()
    if not any((checkpoint / tag).glob("*optim_states.pt")):
        return saved, f"DeepSpeed ZeRO-0 checkpoint adapter weights from {tag}"
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    masters = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=tag)
    by_peft_name = {peft_name(name): tensor for name, tensor in masters.items()}
    missing = sorted(set(saved) - set(by_peft_name))
    if missing:
        raise LauncherError(
            f"{checkpoint / tag}: the shards hold no fp32 weights for {missing[:5]} "
            f"({len(missing)} of the adapter's {len(saved)} tensors)"
        )
    return {name: by_peft_name[name] for name in saved}, f"DeepSpeed fp32 master weights of {tag}"


def peft_name(name: str) -> str:
    """A parameter's name in the model -> its name in a saved adapter (no adapter name)."""
    return name.replace(".modules_to_save.default", "").replace(".default", "")


def export_adapter(
    layout: RunLayout, checkpoint: Path, output: Path, task: str, merge: bool
) -> tuple[str, str]:
    """Write the adapter (or the merged model) to ``output`` through a staging folder; return
    what was written and from what, for the summary line."""
    truth, source = adapter_truth(checkpoint)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        if merge:
            written = write_merged(checkpoint, truth, task, staging)
        else:
            written = write_adapter(checkpoint, truth, staging)
        from launcher.export import copy_tokenizer

        copy_tokenizer(layout.tokenizer_dir, staging)
        if output.exists():
            output.rmdir()  # empty, checked by the caller
        staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written, source


def write_adapter(checkpoint: Path, truth: dict[str, Any], folder: Path) -> str:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copy2(checkpoint / ADAPTER_CONFIG, folder / ADAPTER_CONFIG)
    tensors = {name: tensor.contiguous() for name, tensor in truth.items()}
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    back = load_file(str(folder / ADAPTER_WEIGHTS))
    different = [name for name in truth if not torch.equal(back[name], truth[name])]
    if back.keys() != truth.keys() or different:
        raise LauncherError(f"the written adapter differs from the checkpoint in {different[:5]}")
    count = sum(tensor.numel() for tensor in truth.values())
    return f"adapter: {len(truth)} tensors, {count:,} parameters, each equal to the checkpoint's"


def write_merged(checkpoint: Path, truth: dict[str, Any], task: str, folder: Path) -> str:
    import torch
    from peft import PeftModel, set_peft_model_state_dict

    from launcher.ranks.model import auto_class

    base_path = base_model_path(checkpoint)
    try:
        base = auto_class(task).from_pretrained(base_path, dtype=torch.float32)
    except OSError as error:
        raise LauncherError(
            f"--merge needs the adapter's base model {base_path!r}, which cannot be loaded "
            f"({error}); export the adapter alone (without --merge)"
        ) from error
    model = PeftModel.from_pretrained(base, str(checkpoint)).eval()
    set_peft_model_state_dict(model, truth)
    generator = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().num_embeddings
    sample = torch.randint(0, vocab, SAMPLE_SHAPE, generator=generator)
    with torch.inference_mode():
        expected = model(input_ids=sample).logits
        merged = model.merge_and_unload().eval()
        got = merged(input_ids=sample).logits
    difference = (expected - got).abs().max().item()
    if difference > MERGE_TOLERANCE:
        raise LauncherError(
            f"the merged model's logits differ from base+adapter by {difference:.3g} "
            f"(allowed {MERGE_TOLERANCE}); nothing written"
        )
    merged.save_pretrained(folder)
    count = sum(parameter.numel() for parameter in merged.parameters())
    return (
        f"merged model: {count:,} parameters, logits within {difference:.2g} of base+adapter "
        f"on a {SAMPLE_SHAPE[0]}x{SAMPLE_SHAPE[1]} sample"
    )
