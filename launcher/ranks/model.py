"""The model: loaded pretrained, or built from its architecture's config, shaped for the task.

A model built from config takes its vocabulary size and special-token ids from the run's tokenizer;
a pretrained model gets its embeddings resized when the tokenizer grew (added pad or special tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.architectures import AUTO_MODELS, full_config
from launcher.errors import LauncherError, first_line
from launcher.recipe.schema import Recipe


def auto_class(task: str) -> Any:
    import transformers

    return getattr(transformers, AUTO_MODELS[task])


def task_arguments(recipe: Recipe) -> dict[str, Any]:
    """Config fields of the task's head: the labels of a classifier, named."""
    if recipe.task not in ("classification", "token_classification"):
        return {}
    labels = recipe.data.labels or []
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
    }


def save_base_model(recipe: Recipe, tokenizer: Any, folder: Path) -> None:
    """LoRA on a model built from config: build it (seeded) and save it as the frozen base that
    every rank then loads (quantized, if asked), and that the adapters name. Global rank 0 calls
    it alone (``launcher.ranks.adapters.zero3_partitioning_off``)."""
    from launcher.files import write_folder_atomic

    token_ids = special_token_ids(tokenizer)
    model = model_from_config(recipe, tokenizer, token_ids, task_arguments(recipe))
    write_folder_atomic(folder, model.save_pretrained)


def build_model(recipe: Recipe, tokenizer: Any, base_folder: Path | None = None) -> Any:
    """The model to train. With ``model.lora`` on a model built from config, its frozen weights
    are loaded from ``base_folder`` (``save_base_model``), so that they can be quantized and the
    adapters have a base to name."""
    model_section = recipe.model
    task_kwargs = task_arguments(recipe)
    token_ids = special_token_ids(tokenizer)
    if model_section.pretrained:
        model = load_pretrained(recipe, model_section.pretrained, task_kwargs)
    elif model_section.lora is not None:
        assert base_folder is not None, "LoRA on a model built from config needs a base folder"
        model = load_pretrained(recipe, str(base_folder), task_kwargs)
    else:
        model = model_from_config(recipe, tokenizer, token_ids, task_kwargs)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    for key, value in token_ids.items():
        setattr(model.config, key, value)
    model.accepts_loss_kwargs = consumes_item_count(recipe.task)
    if model_section.lora is not None:
        from launcher.ranks.adapters import add_adapters

        model = add_adapters(recipe, model)
    return model


def model_from_config(
    recipe: Recipe, tokenizer: Any, token_ids: dict[str, int], task_kwargs: dict[str, Any]
) -> Any:
    from transformers import AutoConfig

    model_section = recipe.model
    assert model_section.architecture is not None
    fields = full_config(model_section.architecture, model_section.config)
    fields.update(vocab_size=len(tokenizer), **token_ids, **task_kwargs)
    config = AutoConfig.for_model(model_section.architecture, **without_foreign_ids(fields))
    return auto_class(recipe.task).from_config(
        config, attn_implementation=model_section.attn_implementation
    )


def without_foreign_ids(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without the special-token ids (a config's defaults: Phi-3's pad 32000, GPT-2's
    eos 50256) that lie outside the vocabulary, now the run's tokenizer's: they name tokens
    this tokenizer does not have, and an embedding with an out-of-range padding row cannot be
    built. The tokenizer's own ids (``special_token_ids``) are in range and stay."""
    vocab = fields["vocab_size"]
    cleaned = dict(fields)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = cleaned.get(key)
        if isinstance(value, list):
            kept = [token for token in value if isinstance(token, int) and token < vocab]
            cleaned[key] = kept or None
        elif isinstance(value, int) and value >= vocab:
            cleaned[key] = None
    return cleaned


def consumes_item_count(task: str) -> bool:
    """Whether the model's loss divides by the Trainer's ``num_items_in_batch``.

    The Trainer passes that count to any model whose ``forward`` takes ``**kwargs`` and then
    multiplies the loss by the number of ranks, which is right only when the model divided by the
    global count. The causal-LM loss does; the MLM heads of BERT and DistilBERT and every
    sequence-classification loss take a plain mean, so on 2 ranks their loss and gradients came
    out doubled (seen with transformers 5.23). Saying so explicitly turns the scaling off for them.
    """
    return task == "sft"


def load_pretrained(recipe: Recipe, source: str, task_kwargs: dict[str, Any]) -> Any:
    """``from_pretrained`` with the recipe's ``trust_remote_code`` (off unless the recipe turns it
    on: a model folder's own Python code runs only then), quantized as ``model.quantization``
    says; failures name the recipe key."""
    import os

    from launcher.ranks.adapters import quantized_loading

    model_section = recipe.model
    try:
        return auto_class(recipe.task).from_pretrained(
            os.path.expanduser(source),
            trust_remote_code=model_section.trust_remote_code,
            attn_implementation=model_section.attn_implementation,
            **task_kwargs,
            **quantized_loading(recipe),
        )
    except OSError as error:
        raise LauncherError(
            f"model.pretrained: cannot load {source!r} ({first_line(error)}). "
            "Offline, point it at a local model folder, or try the recipe with --smoke."
        ) from error
    except ValueError as error:
        if refused_remote_code(error):
            raise LauncherError(remote_code_message("model.pretrained", source)) from None
        raise LauncherError(
            f"model.pretrained: cannot load {source!r}: {first_line(error)}"
        ) from error


def refused_remote_code(error: Exception) -> bool:
    """transformers refuses a model or tokenizer that ships code when trust_remote_code is off."""
    return "trust_remote_code" in str(error)


def remote_code_message(key: str, name: str) -> str:
    return (
        f"{key}: {name!r} ships its own Python code (auto_map in its config), which runs only "
        "with model.trust_remote_code=true. Read that code first; set it only for a source you "
        "trust."
    )


def special_token_ids(tokenizer: Any) -> dict[str, int]:
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return {key: value for key, value in ids.items() if value is not None}
