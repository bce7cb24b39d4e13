"""The model: loaded pretrained, or built from its architecture's config, shaped for the task.

A model built from config takes its vocabulary size and special-token ids from the run's tokenizer;
a pretrained model gets its embeddings resized when the tokenizer grew (added pad or special tokens).
"""

from __future__ import annotations

from typing import Any

from launcher.architectures import full_config
from launcher.errors import LauncherError, first_line
from launcher.recipe.schema import Recipe


def auto_class(task: str) -> Any:
    import transformers

    return {
        "sft": transformers.AutoModelForCausalLM,
        "mlm": transformers.AutoModelForMaskedLM,
        "classification": transformers.AutoModelForSequenceClassification,
        "token_classification": transformers.AutoModelForTokenClassification,
    }[task]


def build_model(recipe: Recipe, tokenizer: Any) -> Any:
    model_section = recipe.model
    labels = recipe.data.labels or []
    task_kwargs: dict[str, Any] = {}
    if recipe.task in ("classification", "token_classification"):
        task_kwargs = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }
    token_ids = special_token_ids(tokenizer)
    if model_section.pretrained:
        model = load_pretrained(recipe, task_kwargs)
    else:
        from transformers import AutoConfig

        assert model_section.architecture is not None
        fields = full_config(model_section.architecture, model_section.config)
        fields.update(vocab_size=len(tokenizer), **token_ids, **task_kwargs)
        config = AutoConfig.for_model(model_section.architecture, **fields)
        model = auto_class(recipe.task).from_config(
            config, attn_implementation=model_section.attn_implementation
        )
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    for key, value in token_ids.items():
        setattr(model.config, key, value)
    model.accepts_loss_kwargs = consumes_item_count(recipe.task)
    return model


def consumes_item_count(task: str) -> bool:
    """Whether the model's loss divides by the Trainer's ``num_items_in_batch``.

    The Trainer passes that count to any model whose ``forward`` takes ``**kwargs`` and then
    multiplies the loss by the number of ranks, which is right only when the model divided by the
    global count. The causal-LM loss does; the MLM heads of BERT and DistilBERT and every
    sequence-classification loss take a plain mean, so on 2 ranks their loss and gradients came
    out doubled (seen with transformers 5.23). Saying so explicitly turns the scaling off for them.
    """
    return task == "sft"


def load_pretrained(recipe: Recipe, task_kwargs: dict[str, Any]) -> Any:
    """``from_pretrained`` with the recipe's ``trust_remote_code`` (off unless the recipe turns it
    on: a model folder's own Python code runs only then); failures name the recipe key."""
    import os

    model_section = recipe.model
    assert model_section.pretrained is not None
    try:
        return auto_class(recipe.task).from_pretrained(
            os.path.expanduser(model_section.pretrained),
            trust_remote_code=model_section.trust_remote_code,
            attn_implementation=model_section.attn_implementation,
            **task_kwargs,
        )
    except OSError as error:
        raise LauncherError(
            f"model.pretrained: cannot load {model_section.pretrained!r} ({first_line(error)}). "
            "Offline, point it at a local model folder, or try the recipe with --smoke."
        ) from error
    except ValueError as error:
        if refused_remote_code(error):
            raise LauncherError(
                remote_code_message("model.pretrained", model_section.pretrained)
            ) from None
        raise LauncherError(
            f"model.pretrained: cannot load {model_section.pretrained!r}: {first_line(error)}"
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
