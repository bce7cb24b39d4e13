"""The model architectures the launcher knows: transformers' defaults for each, the model class
of each task, and the tiny sizes ``--smoke`` builds.

Two tiers. Mistral, Llama, DistilBERT and BERT are described here by hand (defaults, fields, the
model class of every task, tiny sizes). Every other decoder ``model_type`` transformers knows
(``qwen2``, ``gemma``, ``phi3``, ``gpt2``, ``falcon``...) comes from ``launcher.transformers_types``,
a file generated from the installed transformers and checked against it by a test: the declared
defaults of its config class, its fields and aliases. The plan cannot import transformers (login
nodes), and a recipe names only the fields it changes, so these defaults are what lets it count
the model the ranks will build with ``AutoConfig.for_model(model_type, **model.config)``.

Standard library only: the planner (on login nodes), the ranks and the export all read it.
"""

from __future__ import annotations

from typing import Any

from launcher.transformers_types import DECODER_CONFIGS, TRANSFORMERS_VERSION

# Mistral and Llama first: the hand-described ones, named first in messages.
DECODERS = ("mistral", "llama", *sorted(set(DECODER_CONFIGS) - {"mistral", "llama"}))
ENCODERS = ("distilbert", "bert")
# What `model.architecture` accepts: every decoder transformers knows, and the two encoders.
ARCHITECTURES = (*DECODERS, *ENCODERS)
# The decoders in a message: a few, and where the list is.
DECODERS_BRIEFLY = (
    "a decoder (mistral, llama, qwen2, gemma, phi3, gpt2, falcon...: every causal-LM model_type "
    "of launcher/transformers_types.py)"
)

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
HAND_CONFIG_FIELDS: dict[str, frozenset[str]] = {
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
# The older names of rope_parameters that transformers still reads.
OLD_ROPE_NAMES = frozenset({"rope_theta", "rope_scaling"})
CONFIG_FIELDS: dict[str, frozenset[str]] = {
    **{
        name: config.fields | OLD_ROPE_NAMES
        if "rope_parameters" in config.fields
        else config.fields
        for name, config in DECODER_CONFIGS.items()
    },
    **HAND_CONFIG_FIELDS,
}
# The generic names transformers also answers to (a config class's ``attribute_map``): a recipe
# may write either; the plan counts with the class's own name.
CONFIG_ALIASES: dict[str, dict[str, str]] = {
    **{name: config.aliases for name, config in DECODER_CONFIGS.items() if config.aliases},
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


# transformers' auto class of each task: the ranks build with it, the plan names it.
AUTO_MODELS: dict[str, str] = {
    "sft": "AutoModelForCausalLM",
    "mlm": "AutoModelForMaskedLM",
    "classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
}
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

    A recipe may name only the fields it changes; counting needs all of them. For a generated
    decoder, the defaults are its config class's declared ones: a field the class derives (a
    ``head_dim`` or ``num_key_value_heads`` left unset) stays None, as transformers declares it.
    """
    if architecture in ARCHITECTURE_DEFAULTS:
        defaults = ARCHITECTURE_DEFAULTS[architecture]
    elif architecture in DECODER_CONFIGS:
        defaults = DECODER_CONFIGS[architecture].defaults
    else:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURE_DEFAULTS)} "
            f"and the decoders of transformers {TRANSFORMERS_VERSION}"
        )
    return {**defaults, **own_names(architecture, config)}


def composite_reason(architecture: str) -> str | None:
    """Why the launcher cannot size ``architecture`` from flat config fields: its config nests
    others (a multimodal model's ``text_config`` and ``vision_config``); None when it can."""
    config = DECODER_CONFIGS.get(architecture)
    if config is None or not config.composite:
        return None
    return (
        f"the {architecture} config nests other configs (text_config, vision_config...): a "
        "multimodal or composite model"
    )


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
# The size fields of the generated decoders, under each name their config classes use, and the
# tiny value of each. Hidden 64 with 4 heads of 16 and 2 key/value heads keeps every ratio
# whole. A field whose declared default is None is derived by the class from the others (GPT-2's
# n_inner: 4 x n_embd; Falcon's num_kv_heads: the heads; Llama-like head_dim: hidden / heads)
# and is left unset, so that it follows the tiny sizes; a set one (Qwen3's head_dim 128,
# Qwen2's 32 key/value heads) is shrunk. Positions and the vocabulary stay: rotary positions
# have no weights, learned ones are few at width 64, and the vocabulary is the tokenizer's.
TINY_SIZES: tuple[tuple[tuple[str, ...], int], ...] = (
    (("hidden_size", "n_embd", "d_model", "dim", "n_embed"), 64),
    (("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers"), 2),
    (("num_attention_heads", "n_head", "n_heads", "num_heads", "decoder_attention_heads"), 4),
    (("num_key_value_heads", "num_kv_heads", "n_kv_heads", "multi_query_group_num"), 2),
    (("head_dim", "kv_channels"), 16),
    (("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", "decoder_ffn_dim"), 128),
    (("moe_intermediate_size", "shared_expert_intermediate_size"), 64),
)
# Fields that only ever shrink (an unset head_dim is set too: at width 64 and 4 heads, 16 is
# what the class would derive, and some classes read it unset).
TINY_UNSET = ("head_dim",)
TINY_AT_MOST: tuple[tuple[tuple[str, ...], int], ...] = (
    (("num_local_experts", "num_experts", "n_routed_experts"), 4),
    (("num_experts_per_tok", "moe_topk"), 2),
    (("n_group", "topk_group"), 1),  # expert groups (DeepSeek): 4 experts in one group
    (("rotary_dim",), 16),  # GPT-J, CodeGen: rotary part of each 16-wide head
    (("num_kv_shared_layers",), 0),  # Gemma 3n: layers reusing the cache of earlier ones
    (("hidden_size_per_layer_input",), 16),
)


def tiny_config(architecture: str) -> dict[str, Any]:
    """The config fields ``--smoke`` sets to build a tiny ``architecture`` (its size fields, by
    the names its config class uses); ValueError when its sizes are not flat fields."""
    if architecture in TINY_CONFIGS:
        return dict(TINY_CONFIGS[architecture])
    reason = composite_reason(architecture)
    if reason:
        raise ValueError(reason)
    defaults = DECODER_CONFIGS[architecture].defaults
    tiny = {}
    for names, value in TINY_SIZES:
        for name in names:
            if _whole(defaults.get(name)) or (name in TINY_UNSET and name in defaults):
                tiny[name] = value
    for names, value in TINY_AT_MOST:
        for name in names:
            if _whole(defaults.get(name)) and defaults[name] > value:
                tiny[name] = value
    return tiny


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
