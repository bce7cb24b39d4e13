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

# Every field each architecture's transformers config takes (its ``__init__`` and ``to_dict``,
# PretrainedConfig's own included), so that a typo in ``model.config`` is caught at plan time
# without importing transformers (a config class keeps an unknown keyword as a plain attribute
# and nothing reads it). tests/plan/test_architectures.py compares them with the installed
# transformers and prints the lists to paste when a release changes them.
COMMON_CONFIG_FIELDS = frozenset(
    {
        "_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "id2label",
        "is_encoder_decoder", "label2id", "model_type", "output_attentions",
        "output_hidden_states", "problem_type", "return_dict", "transformers_version",
        "torch_dtype",  # dtype's name before transformers 5, still read
    }
)  # fmt: skip
_DECODER_FIELDS = {
    "attention_dropout", "bos_token_id", "eos_token_id", "head_dim", "hidden_act", "hidden_size",
    "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
    "num_hidden_layers", "num_key_value_heads", "pad_token_id", "rms_norm_eps", "rope_parameters",
    "tie_word_embeddings", "use_cache", "vocab_size",
    "rope_theta", "rope_scaling",  # older names transformers still turns into rope_parameters
}  # fmt: skip
CONFIG_FIELDS: dict[str, frozenset[str]] = {
    "mistral": frozenset(_DECODER_FIELDS | {"sliding_window"}),
    "llama": frozenset(_DECODER_FIELDS | {"attention_bias", "mlp_bias", "pretraining_tp"}),
    "distilbert": frozenset(
        {
            "activation", "attention_dropout", "bos_token_id", "dim", "dropout", "eos_token_id",
            "hidden_dim", "initializer_range", "max_position_embeddings", "n_heads", "n_layers",
            "pad_token_id", "qa_dropout", "seq_classif_dropout", "sinusoidal_pos_embds",
            "tie_word_embeddings", "vocab_size",
        }
    ),
    "bert": frozenset(
        {
            "add_cross_attention", "attention_probs_dropout_prob", "bos_token_id",
            "classifier_dropout", "eos_token_id", "hidden_act", "hidden_dropout_prob",
            "hidden_size", "initializer_range", "intermediate_size", "is_decoder",
            "layer_norm_eps", "max_position_embeddings", "num_attention_heads",
            "num_hidden_layers", "pad_token_id", "tie_word_embeddings", "type_vocab_size",
            "use_cache", "vocab_size",
        }
    ),
}  # fmt: skip
# The generic names transformers also answers to (a config class's ``attribute_map``): a recipe
# may write either; the plan counts with the class's own name.
CONFIG_ALIASES: dict[str, dict[str, str]] = {
    "distilbert": {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"},
}  # fmt: skip
# Architectures whose positions are learned embeddings: a longer sequence has no position to use.
LEARNED_POSITIONS = ("bert", "distilbert", "roberta", "xlm-roberta", "electra", "albert", "gpt2")


def own_names(architecture: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with transformers' generic aliases renamed to the architecture's own fields."""
    aliases = CONFIG_ALIASES.get(architecture, {})
    return {aliases.get(key, key): value for key, value in config.items()}


def unknown_config_fields(architecture: str, config: dict[str, Any]) -> list[str]:
    """The keys of ``config`` that the architecture's config class does not take."""
    known = (
        CONFIG_FIELDS[architecture]
        | COMMON_CONFIG_FIELDS
        | set(CONFIG_ALIASES.get(architecture, {}))
    )
    return [key for key in config if key not in known]


TASK_MODELS: dict[str, dict[str, str]] = {
    "mistral": {
        "sft": "MistralForCausalLM",
        "classification": "MistralForSequenceClassification",
        "token_classification": "MistralForTokenClassification",
    },
    "llama": {
        "sft": "LlamaForCausalLM",
        "classification": "LlamaForSequenceClassification",
        "token_classification": "LlamaForTokenClassification",
    },
    "distilbert": {
        "mlm": "DistilBertForMaskedLM",
        "classification": "DistilBertForSequenceClassification",
        "token_classification": "DistilBertForTokenClassification",
    },
    "bert": {
        "mlm": "BertForMaskedLM",
        "classification": "BertForSequenceClassification",
        "token_classification": "BertForTokenClassification",
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
    return {**ARCHITECTURE_DEFAULTS[architecture], **own_names(architecture, config)}


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
