"""Parameter counts from an architecture's config, without building the model.

Standard library only: ``launcher plan`` runs on login nodes where importing torch is slow, so the
count is derived from the config, module by module as DeepSpeed groups parameters (tests build each
model and compare). Decoders are counted from their layer layout (``launcher.plan.decoders``);
a model that cannot be counted raises ``UnknownCount`` with the reason, which the plan shows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from launcher.architectures import ARCHITECTURES, TASK_MODELS, composite_reason, full_config
from launcher.plan.decoders import Layout, Part, UnknownLayout, decoder_layout

# Tasks whose head replaces a decoder's lm_head: (module name, bias) of transformers' generic
# sequence and token classification models (a token classifier's head has a bias).
DECODER_HEADS = {"classification": ("score", False), "token_classification": ("score", True)}


class UnknownCount(UnknownLayout):
    """The model's parameters cannot be counted offline; the message says why."""


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
    """Count the parameters of the transformers model `task` builds for `architecture`.

    ValueError for an architecture or task the launcher does not know; ``UnknownCount`` for a
    known decoder it cannot count (no formula for its family, a composite config)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(TASK_MODELS)}")
    models = TASK_MODELS.get(architecture)
    if models is not None and task not in models:
        raise ValueError(
            f"task {task!r} has no {architecture} model; {architecture} supports: "
            f"{', '.join(models)}"
        )
    cfg = full_config(architecture, config)
    if architecture == "distilbert":
        modules = _distilbert(cfg, task, num_labels)
    elif architecture == "bert":
        modules = _bert(cfg, task, num_labels)
    else:
        modules = [_module(part) for part in task_layout(architecture, cfg, task, num_labels).parts]
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


def task_layout(architecture: str, cfg: dict[str, Any], task: str, num_labels: int) -> Layout:
    """The decoder's layers for ``task``: its language-model head, or a classifier in its place
    (``cfg``: every field, ``full_config``)."""
    reason = composite_reason(architecture)
    if reason:
        raise UnknownCount(reason)
    if task not in ("sft", *DECODER_HEADS):
        raise ValueError(f"task {task!r} has no {architecture} model (a decoder)")
    try:
        layout = decoder_layout(architecture, cfg)
    except UnknownLayout as error:
        raise UnknownCount(str(error)) from None
    if task == "sft":
        return layout
    name, bias = DECODER_HEADS[task]
    head = Part(name, "linear", layout.hidden, num_labels, bias=bias, quantized=False)
    return Layout(layout.hidden, [*layout.parts[:-1], head])


def _module(part: Part) -> Module:
    """The DeepSpeed module of a decoder part. A tied lm_head still owns its weight, so DeepSpeed
    counts it in the layer maximum."""
    if part.kind == "embedding":
        return Module(part.n_in * part.n_out, count=part.count, embedding=True)
    if part.kind == "norm":
        return Module(part.n_out, part.n_out if part.bias else 0, part.count, norm=True)
    return Module(
        part.n_in * part.n_out, part.n_out if part.bias else 0, part.count, tied_weight=part.tied
    )


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
