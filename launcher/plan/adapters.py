"""LoRA and QLoRA in the plan: trainable and frozen parameters, and model-state memory per device.

Standard library only (the plan runs on login nodes). The linear layers of each architecture are
listed with their shapes, as peft sees them: ``all-linear`` puts an adapter on every linear layer
but the output head; a list of names matches layers by their last name (``q_proj``). An adapter
on a layer of ``n_in`` inputs and ``n_out`` outputs has ``r * (n_in + n_out)`` parameters (A and
B, no bias). Classification heads are trained in full (peft's ``modules_to_save``). Tests build
the real peft models and compare.

Memory: the frozen weights at their stored size (4-bit NF4 with double quantization: half a byte
per weight plus its constants; 8-bit: one byte; else the training precision's), and for the
trainable parameters alone the weights, gradients and Adam states. ZeRO shards the trainable
states (stage 1: optimizer states, 2: also gradients) and, at stage 3, the frozen weights.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from launcher.architectures import ENCODERS, full_config
from launcher.plan.parameters import task_layout

# NF4 blocks of 64 weights share one absmax; double quantization stores it in 8 bits with one
# fp32 constant per block of 256 absmax values (QLoRA, section 2): 0.5 + 1/64 + 4/(64*256) bytes.
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
INT8_BYTES_PER_WEIGHT = 1.0  # LLM.int8(): one byte per weight (+ a row scale, negligible)
ADAM_BYTES = 8  # two fp32 moments per trainable parameter
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


class Linear(NamedTuple):
    """``count`` linear layers named ``name`` (the last part of its module path)."""

    name: str
    n_in: int
    n_out: int
    count: int
    bias: bool = True
    quantized: bool = True  # bitsandbytes replaces it in QLoRA (launcher.plan.decoders.Part)


class AdapterCount(NamedTuple):
    adapters: int  # the LoRA A and B matrices
    head: int  # a classification head trained in full
    linear_weights: int  # weights of the linear layers bitsandbytes quantizes
    total: int  # every parameter of the model without adapters

    @property
    def trainable(self) -> int:
        return self.adapters + self.head

    @property
    def frozen(self) -> int:
        return self.total - self.head


class AdapterMemory(NamedTuple):
    frozen: float
    trainable_weights: float
    gradients: float
    optimizer_states: float

    @property
    def total(self) -> float:
        return self.frozen + self.trainable_weights + self.gradients + self.optimizer_states


def linear_layers(architecture: str, cfg: dict[str, Any], task: str) -> tuple[list[Linear], int]:
    """The linear layers but the output head, and the head's parameters when it trains in full."""
    if architecture not in ENCODERS:  # a decoder: its layout (launcher.plan.decoders)
        *body, head = task_layout(architecture, cfg, task, cfg.get("num_labels", 2)).parts
        linears = [
            Linear(part.name, part.n_in, part.n_out, part.count, part.bias, part.quantized)
            for part in body
            if part.kind == "linear"
        ]
        trained = head.n_in * head.n_out + (head.n_out if head.bias else 0)
        return linears, 0 if task == "sft" else trained
    if architecture == "bert":
        hidden, inter, layers = (
            cfg["hidden_size"],
            cfg["intermediate_size"],
            cfg["num_hidden_layers"],
        )
        linears = [
            Linear("query", hidden, hidden, layers),
            Linear("key", hidden, hidden, layers),
            Linear("value", hidden, hidden, layers),
            Linear("dense", hidden, hidden, layers),  # attention output
            Linear("dense", hidden, inter, layers),  # intermediate
            Linear("dense", inter, hidden, layers),  # output
        ]
        if task == "classification":
            linears.append(Linear("dense", hidden, hidden, 1))  # pooler
        if task == "mlm":
            linears.append(Linear("dense", hidden, hidden, 1))  # transform
        return linears, classifier_head(task, hidden, cfg)
    if architecture == "distilbert":
        dim, hidden_dim, layers = cfg["dim"], cfg["hidden_dim"], cfg["n_layers"]
        linears = [
            Linear("q_lin", dim, dim, layers),
            Linear("k_lin", dim, dim, layers),
            Linear("v_lin", dim, dim, layers),
            Linear("out_lin", dim, dim, layers),
            Linear("lin1", dim, hidden_dim, layers),
            Linear("lin2", hidden_dim, dim, layers),
        ]
        if task == "mlm":
            linears.append(Linear("vocab_transform", dim, dim, 1))
        # peft trains `pre_classifier` in full with the classifier (its name ends the same).
        pre_classifier = dim * dim + dim if task == "classification" else 0
        return linears, classifier_head(task, dim, cfg) + pre_classifier
    raise ValueError(f"no adapter layout for architecture {architecture!r}")


def classifier_head(task: str, hidden: int, cfg: dict[str, Any]) -> int:
    labels = cfg.get("num_labels", 2)
    return hidden * labels + labels if task in ("classification", "token_classification") else 0


def count_adapters(
    architecture: str,
    config: dict[str, Any],
    task: str,
    num_labels: int,
    rank: int,
    targets: str | list[str],
    total: int,
) -> AdapterCount:
    """Adapter, head and quantizable parameters of the recipe's model; ``total`` is the model's
    own parameter count (``count_parameters``)."""
    cfg = {**full_config(architecture, config), "num_labels": num_labels}
    linears, head = linear_layers(architecture, cfg, task)
    chosen = [
        linear for linear in linears if targets == "all-linear" or linear.name in set(targets)
    ]
    return AdapterCount(
        adapters=sum(rank * (linear.n_in + linear.n_out) * linear.count for linear in chosen),
        head=head,
        linear_weights=sum(
            linear.n_in * linear.n_out * linear.count for linear in linears if linear.quantized
        ),
        total=total,
    )


def adapter_memory(
    count: AdapterCount,
    quantization: str,
    precision: str,
    zero_stage: int,
    gpus: int,
    trainable_bytes: int = 4,
) -> AdapterMemory:
    """Model-state bytes per device of a LoRA run (activations not included). The trainable
    weights and their gradients take ``trainable_bytes`` each (fp32; bf16 for QLoRA SFT, which
    TRL casts to bf16)."""
    stored = PRECISION_BYTES[precision]
    per_weight = {"4bit": NF4_BYTES_PER_WEIGHT, "8bit": INT8_BYTES_PER_WEIGHT}.get(quantization)
    if per_weight is None:
        frozen = count.frozen * stored
    else:  # the linear layers quantized; embeddings, norms and the output head are not
        frozen = count.linear_weights * per_weight + (count.frozen - count.linear_weights) * stored
    trainable = count.trainable
    shards = gpus if zero_stage else 1
    return AdapterMemory(
        frozen=frozen / (gpus if zero_stage == 3 else 1),
        trainable_weights=trainable_bytes * trainable / (gpus if zero_stage == 3 else 1),
        gradients=trainable_bytes * trainable / (gpus if zero_stage >= 2 else 1),
        optimizer_states=ADAM_BYTES * trainable / shards,
    )
