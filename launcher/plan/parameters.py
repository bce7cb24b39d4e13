"""Parameter counts from an architecture's config, without building the model.

Standard library only: ``launcher plan`` runs on login nodes where importing torch is slow, so the
count is derived from the config, module by module as DeepSpeed groups parameters (tests build each
model and compare).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from launcher.architectures import TASK_MODELS, full_config


class Module(NamedTuple):
    """The parameters one module owns directly (DeepSpeed's `model_to_params` unit), `count` times.

    ``embedding``: an ``nn.Embedding``, whose 8-bit optimizer states the Trainer keeps in 32 bits.
    ``norm``: a LayerNorm/RMSNorm, excluded from weight decay like every bias (the Trainer's
    second parameter group). ``tied_*``: that tensor is another module's (a tied head), so it
    counts in the module's size but not in the model's total.
    """

    weight: int
    bias: int = 0
    count: int = 1
    embedding: bool = False
    norm: bool = False
    tied_weight: bool = False
    tied_bias: bool = False


class TensorGroup(NamedTuple):
    """``count`` distinct parameter tensors of ``numel`` values each, as an optimizer sees them."""

    numel: int
    count: int
    embedding: bool
    decay: bool


class ParameterCount(NamedTuple):
    """Parameters of a model, as DeepSpeed's ZeRO estimators take them.

    `total` counts tied tensors once; `largest_layer` is the most parameters any single module
    owns directly (DeepSpeed's `model_to_params`), which is what ZeRO-3 gathers at once.
    `tensors` lists the distinct parameter tensors (8-bit optimizer states depend on each
    tensor's size); a count given as two bare numbers has none, and is treated as one tensor.
    """

    total: int
    largest_layer: int
    tensors: tuple[TensorGroup, ...] = ()


def count_parameters(
    architecture: str, config: dict[str, Any], task: str, num_labels: int = 2
) -> ParameterCount:
    """Count the parameters of the transformers model `task` builds for `architecture`."""
    models = TASK_MODELS.get(architecture)
    if models is None:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(TASK_MODELS)}")
    if task not in models:
        raise ValueError(
            f"task {task!r} has no {architecture} model; {architecture} supports: "
            f"{', '.join(models)}"
        )
    cfg = full_config(architecture, config)
    builder = {
        "mistral": _decoder,
        "llama": _decoder,
        "distilbert": _distilbert,
        "bert": _bert,
    }
    modules = builder[architecture](cfg, task, num_labels)
    tensors = tuple(_tensor_groups(modules))
    return ParameterCount(
        total=sum(group.numel * group.count for group in tensors),
        largest_layer=max(module.weight + module.bias for module in modules),
        tensors=tensors,
    )


def _tensor_groups(modules: list[Module]) -> list[TensorGroup]:
    groups = []
    for m in modules:
        if m.weight and not m.tied_weight:
            groups.append(TensorGroup(m.weight, m.count, m.embedding, decay=not m.norm))
        if m.bias and not m.tied_bias:
            groups.append(TensorGroup(m.bias, m.count, embedding=False, decay=False))
    return groups


def _linear(n_in: int, n_out: int, bias: bool = True, count: int = 1) -> Module:
    return Module(n_in * n_out, n_out if bias else 0, count)


def _decoder(cfg: dict[str, Any], task: str, num_labels: int) -> list[Module]:
    """Modules of Mistral/Llama."""
    hidden, vocab, inter = (
        cfg["hidden_size"],
        cfg["vocab_size"],
        cfg["intermediate_size"],
    )
    layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv_heads = cfg["num_key_value_heads"] or heads
    head_dim = cfg["head_dim"] or hidden // heads
    attn_bias, mlp_bias = bool(cfg.get("attention_bias")), bool(cfg.get("mlp_bias"))
    modules = [
        Module(vocab * hidden, embedding=True),  # embed_tokens
        _linear(hidden, heads * head_dim, attn_bias, layers),  # q_proj
        _linear(hidden, kv_heads * head_dim, attn_bias, 2 * layers),  # k_proj, v_proj
        _linear(heads * head_dim, hidden, attn_bias, layers),  # o_proj
        _linear(hidden, inter, mlp_bias, 2 * layers),  # gate_proj, up_proj
        _linear(inter, hidden, mlp_bias, layers),  # down_proj
        Module(hidden, count=2 * layers + 1, norm=True),  # RMSNorms: two per layer, final one
    ]
    if task == "classification":
        return [*modules, _linear(hidden, num_labels, bias=False)]  # score
    if task == "token_classification":
        return [*modules, _linear(hidden, num_labels)]  # score, with a bias
    # A tied lm_head still owns its weight, so DeepSpeed counts it in the layer maximum.
    return [*modules, Module(vocab * hidden, tied_weight=bool(cfg["tie_word_embeddings"]))]


def _bert(cfg: dict[str, Any], task: str, num_labels: int) -> list[Module]:
    """Modules of BERT."""
    hidden, vocab, inter = (
        cfg["hidden_size"],
        cfg["vocab_size"],
        cfg["intermediate_size"],
    )
    layers = cfg["num_hidden_layers"]
    modules = [
        Module(vocab * hidden, embedding=True),  # word_embeddings
        Module(cfg["max_position_embeddings"] * hidden, embedding=True),
        Module(cfg["type_vocab_size"] * hidden, embedding=True),
        Module(hidden, hidden, 1 + 2 * layers, norm=True),  # LayerNorms: embeddings, 2 per layer
        _linear(hidden, hidden, count=4 * layers),  # query, key, value, attention output
        _linear(hidden, inter, count=layers),
        _linear(inter, hidden, count=layers),
    ]
    if task == "classification":
        return [*modules, _linear(hidden, hidden), _linear(hidden, num_labels)]  # pooler, head
    if task == "token_classification":
        return [*modules, _linear(hidden, num_labels)]  # classifier (no pooler)
    # transformers ties decoder.bias to predictions.bias only along with the word embeddings.
    tied = bool(cfg["tie_word_embeddings"])
    return [
        *modules,
        _linear(hidden, hidden),  # transform.dense
        Module(hidden, hidden, norm=True),  # transform.LayerNorm
        Module(0, vocab),  # predictions.bias
        Module(hidden * vocab, vocab, tied_weight=tied, tied_bias=tied),  # decoder
    ]


def _distilbert(cfg: dict[str, Any], task: str, num_labels: int) -> list[Module]:
    """Modules of DistilBERT."""
    dim, vocab, layers = cfg["dim"], cfg["vocab_size"], cfg["n_layers"]
    modules = [
        Module(vocab * dim, embedding=True),  # word_embeddings
        # position_embeddings: a parameter even when sinusoidal
        Module(cfg["max_position_embeddings"] * dim, embedding=True),
        Module(dim, dim, 1 + 2 * layers, norm=True),  # LayerNorms: embeddings, 2 per layer
        _linear(dim, dim, count=4 * layers),  # q_lin, k_lin, v_lin, out_lin
        _linear(dim, cfg["hidden_dim"], count=layers),
        _linear(cfg["hidden_dim"], dim, count=layers),
    ]
    if task == "classification":
        return [*modules, _linear(dim, dim), _linear(dim, num_labels)]  # pre_classifier
    if task == "token_classification":
        return [*modules, _linear(dim, num_labels)]  # classifier
    return [
        *modules,
        _linear(dim, dim),  # vocab_transform
        Module(dim, dim, norm=True),  # vocab_layer_norm
        Module(dim * vocab, vocab, tied_weight=bool(cfg["tie_word_embeddings"])),  # projector
    ]
