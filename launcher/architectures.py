"""The model architectures the launcher knows: transformers' defaults for each, the model class
of each task, and the tiny sizes ``--smoke`` builds.

Standard library only: the planner (on login nodes), the ranks and the export all read it.
"""

from __future__ import annotations

from typing import Any

DECODERS = ("mistral", "llama")
ENCODERS = ("distilbert", "bert")

ARCHITECTURE_DEFAULTS: dict[str, dict[str, Any]] = {
    # transformers.MistralConfig; head_dim None means hidden_size // num_attention_heads.
    "mistral": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": None,
        "max_position_embeddings": 131072,
        "tie_word_embeddings": False,
    },
    # transformers.LlamaConfig; num_key_value_heads None means num_attention_heads.
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": None,
        "head_dim": None,
        "max_position_embeddings": 2048,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
    },
    # transformers.DistilBertConfig (its own field names: dim, hidden_dim, n_layers, n_heads).
    "distilbert": {
        "vocab_size": 30522,
        "dim": 768,
        "hidden_dim": 3072,
        "n_layers": 6,
        "n_heads": 12,
        "max_position_embeddings": 512,
        "sinusoidal_pos_embds": False,
        "tie_word_embeddings": True,
    },
    # transformers.BertConfig.
    "bert": {
        "vocab_size": 30522,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "tie_word_embeddings": True,
    },
}

TASK_MODELS: dict[str, dict[str, str]] = {
    "mistral": {
        "sft": "MistralForCausalLM",
        "classification": "MistralForSequenceClassification",
    },
    "llama": {
        "sft": "LlamaForCausalLM",
        "classification": "LlamaForSequenceClassification",
    },
    "distilbert": {
        "mlm": "DistilBertForMaskedLM",
        "classification": "DistilBertForSequenceClassification",
    },
    "bert": {
        "mlm": "BertForMaskedLM",
        "classification": "BertForSequenceClassification",
    },
}


def full_config(architecture: str, config: dict[str, Any]) -> dict[str, Any]:
    """Return transformers' defaults for `architecture` updated with `config`.

    A recipe may name only the fields it changes; counting needs all of them.
    """
    if architecture not in ARCHITECTURE_DEFAULTS:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURE_DEFAULTS)}"
        )
    return {**ARCHITECTURE_DEFAULTS[architecture], **config}


# ``--smoke`` models: the same architecture at a size a laptop CPU trains in seconds.
TINY_DECODER = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "mistral": TINY_DECODER,
    "llama": TINY_DECODER,
    "distilbert": {"dim": 64, "hidden_dim": 128, "n_layers": 2, "n_heads": 4},
    "bert": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
}
