"""``--smoke``: the same recipe, shrunk until it runs offline on a laptop CPU in a minute or two.

The code path stays the one of the real run (same task, architecture, tokenizer algorithm, data
columns, distribution strategy); only sizes shrink and what cannot be had offline (hub models,
tokenizers and datasets) is replaced by a local stand-in. Every change is returned as a note so the
plan shows exactly what a smoke run does differently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.architectures import ARCHITECTURES, DECODERS, own_names, tiny_config
from launcher.contract import RunLayout
from launcher.errors import RecipeError, RecipeProblem
from launcher.plan.model_config import read_model_config
from launcher.recipe.chat_template import CHATML, CHATML_TOKENS
from launcher.recipe.loader import differences, with_overrides
from launcher.recipe.sample_formats import renders_chats
from launcher.recipe.schema import Recipe, TrainedTokenizerSection, file_paths, split_name

DECODER_SPECIALS = ["<unk>", "<s>", "</s>"]
ENCODER_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SMOKE_TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
SMOKE_EVAL_FRACTION = 4  # generated eval split: a quarter of the training samples


def apply_smoke(
    recipe: Recipe,
    layout: RunLayout,
    exists: Callable[[Path], bool] = Path.exists,
    overrides: tuple[str, ...] = (),
) -> tuple[Recipe, list[str]]:
    """The smoke version of ``recipe`` and one note per change, in recipe order.

    Command-line overrides still win (the one precedence rule): ``--smoke training.max_steps=10``
    runs 10 steps, and the notes say which smoke settings an override replaced.
    """
    refuse_gpu_only(recipe)
    smoke = recipe.model_copy(deep=True)
    tokenizer_source = recipe.tokenizer.pretrained or recipe.model.pretrained
    notes = [
        shrink_model(smoke, exists),
        swap_tokenizer(smoke, tokenizer_source, exists),
        swap_data(smoke, layout, exists),
        shrink_training(smoke),
    ]
    shrunk = smoke
    smoke = with_overrides(shrunk, overrides)
    kept = [
        key
        for key, _, _ in differences(shrunk.model_dump(mode="json"), smoke.model_dump(mode="json"))
    ]
    if kept:
        notes.append(f"command line wins over smoke for: {', '.join(kept)}")
    return smoke, [note for note in notes if note]


def refuse_gpu_only(recipe: Recipe) -> None:
    """A smoke run trains on CPU: what runs on GPUs only is refused before anything starts."""
    dist = recipe.distributed
    if (
        recipe.model.quantization != "none"
        and dist.strategy == "deepspeed"
        and dist.zero_stage == 3
    ):
        raise RecipeError(
            [
                RecipeProblem(
                    "--smoke",
                    "model.quantization",
                    "QLoRA under DeepSpeed ZeRO-3 runs on GPUs only (ZeRO-3 partitions the "
                    "bitsandbytes 4-bit weights on CUDA), and a smoke run is on CPU: try it "
                    "with distributed.zero_stage=2, or without model.quantization",
                )
            ]
        )


def shrink_model(recipe: Recipe, exists: Callable[[Path], bool]) -> str:
    """A tiny model of the recipe's architecture (``model.architecture``, else the pretrained
    model's own ``model_type``, read from its config.json in its folder or the hub cache), its
    size fields shrunk by the names its config class uses (``architectures.tiny_config``)."""
    model = recipe.model
    architecture, why = model.architecture, ""
    if architecture is None and model.pretrained:
        architecture, why = pretrained_model_type(model.pretrained, exists)
    if architecture is None:
        raise RecipeError(
            [
                RecipeProblem(
                    "--smoke",
                    "model.architecture",
                    f"needed to build a tiny model like {model.pretrained!r} ({why}); set it to "
                    "the model's model_type: mistral, llama, qwen2, gemma, phi3, gpt2, falcon... "
                    "or distilbert, bert",
                )
            ]
        )
    try:
        tiny = {**tiny_config(architecture), **recipe.smoke.tiny_config}
    except ValueError as error:  # sizes nested in text_config...: no flat fields to shrink
        raise RecipeError(
            [
                RecipeProblem(
                    "--smoke",
                    "model.architecture",
                    f"cannot build a tiny {architecture}: {error}; name its text model's "
                    "model_type instead (gemma3_text for gemma3, ...)",
                )
            ]
        ) from None
    was = model.pretrained or f"{architecture} {sizes_of(model.config) or 'default sizes'}"
    recipe.model.architecture = architecture
    recipe.model.pretrained = None
    recipe.model.config = {**own_names(architecture, model.config), **tiny}
    return f"model: tiny {architecture} built from config ({sizes_of(tiny)}) instead of {was}"


def swap_tokenizer(recipe: Recipe, source: str | None, exists: Callable[[Path], bool]) -> str:
    tokenizer = recipe.tokenizer
    vocab = recipe.smoke.vocab_size
    if tokenizer.train and tokenizer.train.algorithm != "retrain":
        old = tokenizer.train.vocab_size
        tokenizer.train.vocab_size = min(old, vocab)
        return f"tokenizer: {tokenizer.train.algorithm} trained with {tokenizer.train.vocab_size} tokens (recipe: {old})"
    if source and exists(Path(source)):
        tokenizer.pretrained = source
        if tokenizer.train:
            tokenizer.train.vocab_size = min(tokenizer.train.vocab_size, vocab)
        return ""
    wanted = source or "the model's tokenizer"
    decoder = recipe.model.architecture in DECODERS
    tokenizer.pretrained = None
    tokenizer.train = TrainedTokenizerSection(
        algorithm="byte_level_bpe" if decoder else "wordpiece",
        vocab_size=vocab,
        min_frequency=1,
        special_tokens=DECODER_SPECIALS if decoder else ENCODER_SPECIALS,
        lowercase=not decoder,
        # Byte-level BPE takes pre-split words (token classification) only with it.
        add_prefix_space=decoder and recipe.task == "token_classification",
    )
    chat = ""
    if recipe.task == "sft" and renders_chats(recipe.data) and tokenizer.chat_template is None:
        tokenizer.special_tokens = [*tokenizer.special_tokens, *CHATML_TOKENS]
        tokenizer.chat_template = CHATML
        chat = ", with the ChatML chat template (the model's own renders the chats in a real run)"
    return (
        f"tokenizer: {tokenizer.train.algorithm} with {vocab} tokens trained on the smoke data "
        f"instead of {wanted} (hub tokenizers are not fetched for smoke runs){chat}"
    )


def swap_data(recipe: Recipe, layout: RunLayout, exists: Callable[[Path], bool]) -> str:
    data = recipe.data
    count = recipe.smoke.num_samples
    eval_count = max(count // SMOKE_EVAL_FRACTION, 2)
    data.max_length = min(data.max_length, recipe.smoke.max_length)
    if data.sources:  # a mixture stays one, each source shrunk or generated
        from launcher.plan.smoke_sources import swap_sources

        return swap_sources(recipe, layout, exists)
    local = data.files and all(exists(Path(f)) for f in file_paths(data.files))
    if local:
        if data.train_samples:  # a random subset stays random: only its size shrinks
            data.train_samples = min(data.train_samples, count)
        else:
            data.train_split = f"{split_name(data.train_split)}[:{count}]"
        if data.eval_samples:
            data.eval_samples = min(data.eval_samples, eval_count)
        elif data.eval_split:
            data.eval_split = f"{split_name(data.eval_split)}[:{eval_count}]"
        taken = (
            f"{data.train_samples} shuffled samples (data.train_samples)"
            if data.train_samples
            else f"first {count} samples"
        )
        return f"data: {taken} of the recipe's local files, max length {data.max_length}"
    wanted = data.dataset or ", ".join(str(f) for f in file_paths(data.files or {}))
    files = {"train": str(layout.smoke_data_dir / "train.jsonl")}
    if data.eval_split:
        files["eval"] = str(layout.smoke_data_dir / "eval.jsonl")
        data.eval_split = "eval"
    data.dataset, data.dataset_config, data.files, data.format = None, None, files, "json"
    data.train_split = "train"
    data.column_names = None  # generated JSON lines name their columns
    shrink_samples(data, count, eval_count)
    tags = ""
    if recipe.task == "token_classification" and not data.labels:
        data.labels = SMOKE_TAGS  # the hub dataset would have named them
        tags = f", tags {' '.join(SMOKE_TAGS)} (the dataset's own are read in a real run)"
    return (
        f"data: {count} generated samples with the recipe's columns in {layout.smoke_data_dir} "
        f"instead of {wanted}, max length {data.max_length}{tags}"
    )


def shrink_samples(data: Any, count: int, eval_count: int) -> None:
    """``data.train_samples`` / ``eval_samples`` cut to what the generated splits hold (the
    training file less an ``eval_fraction`` hold-out, ceil-rounded as ``datasets`` rounds it)."""
    held_out = math.ceil(data.eval_fraction * count) if data.eval_fraction else 0
    if data.train_samples:
        data.train_samples = min(data.train_samples, count - held_out)
    if data.eval_samples:
        data.eval_samples = min(data.eval_samples, held_out or eval_count)


def shrink_training(recipe: Recipe) -> str:
    training, smoke = recipe.training, recipe.smoke
    every = min(smoke.checkpoint_every, smoke.max_steps)
    training.max_steps = smoke.max_steps
    training.precision = "fp32"
    training.logging_steps = 1
    training.warmup_steps = min(training.warmup_steps, smoke.max_steps // 2)
    training.per_device_batch_size = min(training.per_device_batch_size, smoke.max_batch_size)
    if training.per_device_eval_batch_size:
        training.per_device_eval_batch_size = min(
            training.per_device_eval_batch_size, smoke.max_batch_size
        )
    training.dataloader_num_workers = 0
    if training.eval_strategy != "no":
        training.eval_strategy, training.eval_steps = "steps", every
    if recipe.checkpointing.strategy != "no":
        recipe.checkpointing.strategy, recipe.checkpointing.every_steps = "steps", every
    return (
        f"training: {smoke.max_steps} steps in fp32, micro batch {training.per_device_batch_size}, "
        f"checkpoint{' and eval' if training.eval_strategy != 'no' else ''} every {every} steps"
    )


def pretrained_model_type(
    pretrained: str, exists: Callable[[Path], bool]
) -> tuple[str | None, str]:
    """The ``model_type`` of a pretrained model (its config.json in its folder or the hub cache,
    read without transformers) when the launcher can build it, else None and why not."""
    read = read_model_config(pretrained, exists)
    if read.config is None:
        return None, read.source
    model_type = read.config.get("model_type")
    if model_type not in ARCHITECTURES:
        return None, f"its model_type {model_type!r} ({read.source}) is none the launcher builds"
    return model_type, ""


def sizes_of(config: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in config.items() if isinstance(value, int))
