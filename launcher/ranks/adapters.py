"""LoRA and QLoRA: low-rank adapters (peft) trained on top of frozen, possibly quantized, weights.

The frozen weights must exist as a model folder, both to load them quantized (bitsandbytes
quantizes while ``from_pretrained`` reads) and because an adapter is worth nothing without the
exact weights it was trained on. A pretrained model is that folder already; a model built from a
config (``--smoke``, pre-training recipes) is built once by global rank 0, seeded, and saved to
``RUN/base-model`` before any rank loads it, and the saved adapter names that folder as its base.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from launcher.recipe.schema import Recipe

# peft's task type per task: it decides which head is trained in full (``modules_to_save``) and
# which forward arguments the wrapped model passes on.
PEFT_TASK_TYPES = {
    "sft": "CAUSAL_LM",
    "classification": "SEQ_CLS",
    "token_classification": "TOKEN_CLS",
    "mlm": None,
}


# The classification heads' module names: peft trains every module whose name ends with
# `classifier` or `score` in full for SEQ_CLS and TOKEN_CLS (DistilBERT's `pre_classifier` too).
HEADS = ("classifier", "score", "pre_classifier")
HEAD_TASKS = ("classification", "token_classification")


def quantization_config(recipe: Recipe) -> Any:
    """bitsandbytes settings for ``model.quantization``: NF4 with double quantization computing
    in the training precision (QLoRA's), or LLM.int8()."""
    import torch
    from transformers import BitsAndBytesConfig

    if recipe.model.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        recipe.training.precision, torch.float32
    )
    dist = recipe.distributed
    zero3 = dist.strategy == "deepspeed" and dist.zero_stage == 3
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
        # ZeRO-3 partitions parameters of one dtype: the packed 4-bit weights are stored in it.
        **({"bnb_4bit_quant_storage": compute} if zero3 else {}),
    )


def quantized_loading(recipe: Recipe) -> dict[str, Any]:
    """``from_pretrained`` arguments that quantize the weights as they load, onto this rank's
    device (bitsandbytes places quantized weights itself; they cannot move afterwards)."""
    if recipe.model.quantization == "none":
        return {}
    from launcher.ranks import runtime

    device: Any = runtime.local_device_index() if runtime.cuda_available() else "cpu"
    return {"quantization_config": quantization_config(recipe), "device_map": {"": device}}


def add_adapters(recipe: Recipe, model: Any) -> Any:
    """The model wrapped with the recipe's adapters: only they (and the task's head) train."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = recipe.model.lora
    assert lora is not None
    if recipe.model.quantization != "none":
        # Norms in fp32, inputs that require grad (gradient checkpointing through frozen layers).
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=recipe.training.gradient_checkpointing
        )
        no_packed_inference_weights(model)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        # The head trains in full (peft's modules_to_save for these task types); an adapter on
        # it as well is refused by peft ("modules_to_save cannot be applied to" a LoRA layer),
        # which `all-linear` asked for on a decoder's token-classification `score`.
        exclude_modules=list(HEADS) if recipe.task in HEAD_TASKS else None,
        task_type=PEFT_TASK_TYPES[recipe.task],
    )
    return get_peft_model(model, config)


def no_packed_inference_weights(model: Any) -> None:
    """Keep bitsandbytes' 4-bit layers in their training layout on CPU.

    On a CPU with AVX512-BF16, a 4-bit layer's forward in eval mode repacks its weights into a
    layout for inference and keeps them so; only saving a state dict turns them back. Training
    after an evaluation then adds the bias in place to a tensor autograd needs and fails ("a view
    of a leaf Variable ... in-place operation"): on every rank but the one that saved, or after
    an evaluation at a step without a checkpoint (found with QLoRA on 2 DDP ranks, rank 1). GPUs
    never repack."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def trainable_summary(model: Any) -> str:
    """``adapters: 16,384 trainable parameters of 128,832 (12.72%)``."""
    trainable, total = model.get_nb_trainable_parameters()
    return (
        f"adapters: {trainable:,} trainable parameters of {total:,} "
        f"({100 * trainable / max(total, 1):.2f}%)"
    )


@contextmanager
def zero3_partitioning_off(hf_deepspeed_config: Any | None) -> Iterator[None]:
    """Build a model in one rank alone under ZeRO-3: transformers would partition its parameters
    as they are created (``deepspeed.zero.Init``), a collective the waiting ranks never join, so
    the run hung. ``hf_deepspeed_config`` is the Trainer arguments' (None without DeepSpeed)."""
    if hf_deepspeed_config is None:
        yield
        return
    from transformers.integrations.deepspeed import (
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(hf_deepspeed_config)
