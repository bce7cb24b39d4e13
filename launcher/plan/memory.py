"""Parameter counts and per-device memory estimates for `launcher plan`.

Standard library only: `launcher plan` runs on login nodes where importing torch takes tens of
seconds, so parameter counts are derived analytically from the architecture config instead of
building the model, and the memory formulas are copied from DeepSpeed instead of imported.

Byte symbols used throughout (P = parameters, L = parameters of the largest layer, N = GPUs in
the job, n = nodes, b = `additional_buffer_factor`):

- ``w``: bytes of a working weight and of its working gradient (2 for bf16/fp16, 4 for fp32);
- ``x``: bytes of the extra fp32 gradient partition the mixed-precision optimizer step reads
  (4 for bf16/fp16, 0 for fp32, where the gradient already is fp32);
- ``m``: bytes of the fp32 master weight (4 for bf16/fp16, 0 for fp32);
- ``s``: bytes of optimizer state (Adam 8, 8-bit Adam 2, Adafactor ~4, SGD 0).

For bf16/fp16 with 32-bit Adam (w=2, x=4, m=4, s=8) stages 2 and 3 reproduce DeepSpeed's
`estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs` exactly,
integer truncation included.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

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

MIXED_PRECISIONS = ("bf16", "fp16")
PRECISIONS = ("fp32", *MIXED_PRECISIONS)

# Bytes of optimizer state per parameter, the fp32 master copy not included.
OPTIMIZER_STATE_BYTES: dict[str, int] = {
    "adamw_torch": 8,  # m and v in fp32
    "adamw_torch_fused": 8,
    "paged_adamw_32bit": 8,
    "adamw_8bit": 2,  # m and v quantized to 1 byte each (block-wise scales ignored)
    "paged_adamw_8bit": 2,
    "adafactor": 4,  # factored second moment, no momentum: approximated as 4 bytes
    "sgd": 0,  # Trainer's SGD has no momentum
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


@dataclass(frozen=True)
class ParameterCount:
    """Parameters of a model, as DeepSpeed's ZeRO estimators take them.

    `total` counts tied tensors once; `largest_layer` is the most parameters any single module
    owns directly (DeepSpeed's `model_to_params`), which is what ZeRO-3 gathers at once.
    """

    total: int
    largest_layer: int


# A model's modules as (parameters the module owns directly, how many such modules).
_Modules = list[tuple[int, int]]


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
    modules, shared = builder[architecture](cfg, task, num_labels)
    total = sum(size * count for size, count in modules) - shared
    return ParameterCount(total=total, largest_layer=max(size for size, _ in modules))


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _decoder(cfg: dict[str, Any], task: str, num_labels: int) -> tuple[_Modules, int]:
    """Modules of Mistral/Llama; returns them and the parameters counted twice (tied head)."""
    hidden, vocab, inter = (
        cfg["hidden_size"],
        cfg["vocab_size"],
        cfg["intermediate_size"],
    )
    layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv_heads = cfg["num_key_value_heads"] or heads
    head_dim = cfg["head_dim"] or hidden // heads
    attn_bias, mlp_bias = bool(cfg.get("attention_bias")), bool(cfg.get("mlp_bias"))
    modules: _Modules = [
        (vocab * hidden, 1),  # embed_tokens
        (_linear(hidden, heads * head_dim, attn_bias), layers),  # q_proj
        (_linear(hidden, kv_heads * head_dim, attn_bias), 2 * layers),  # k_proj, v_proj
        (_linear(heads * head_dim, hidden, attn_bias), layers),  # o_proj
        (_linear(hidden, inter, mlp_bias), 2 * layers),  # gate_proj, up_proj
        (_linear(inter, hidden, mlp_bias), layers),  # down_proj
        (hidden, 2 * layers + 1),  # RMSNorms: two per layer and the final one
    ]
    if task == "classification":
        return [*modules, (_linear(hidden, num_labels, bias=False), 1)], 0  # score
    # A tied lm_head still owns its weight, so DeepSpeed counts it in the layer maximum.
    shared = vocab * hidden if cfg["tie_word_embeddings"] else 0
    return [*modules, (vocab * hidden, 1)], shared


def _bert(cfg: dict[str, Any], task: str, num_labels: int) -> tuple[_Modules, int]:
    """Modules of BERT; returns them and the parameters counted twice (tied decoder)."""
    hidden, vocab, inter = (
        cfg["hidden_size"],
        cfg["vocab_size"],
        cfg["intermediate_size"],
    )
    layers = cfg["num_hidden_layers"]
    modules: _Modules = [
        (vocab * hidden, 1),  # word_embeddings
        (cfg["max_position_embeddings"] * hidden, 1),
        (cfg["type_vocab_size"] * hidden, 1),
        (2 * hidden, 1 + 2 * layers),  # LayerNorms: embeddings and two per layer
        (_linear(hidden, hidden), 4 * layers),  # query, key, value, attention output
        (_linear(hidden, inter), layers),
        (_linear(inter, hidden), layers),
    ]
    if task == "classification":
        head = [
            (_linear(hidden, hidden), 1),
            (_linear(hidden, num_labels), 1),
        ]  # pooler
        return modules + head, 0
    head = [
        (_linear(hidden, hidden), 1),  # transform.dense
        (2 * hidden, 1),  # transform.LayerNorm
        (vocab, 1),  # predictions.bias
        (_linear(hidden, vocab), 1),  # decoder
    ]
    # transformers ties decoder.bias to predictions.bias only along with the word embeddings.
    shared = vocab * hidden + vocab if cfg["tie_word_embeddings"] else 0
    return modules + head, shared


def _distilbert(cfg: dict[str, Any], task: str, num_labels: int) -> tuple[_Modules, int]:
    """Modules of DistilBERT; returns them and the parameters counted twice (tied projector)."""
    dim, vocab, layers = cfg["dim"], cfg["vocab_size"], cfg["n_layers"]
    modules: _Modules = [
        (vocab * dim, 1),  # word_embeddings
        (cfg["max_position_embeddings"] * dim, 1),  # a parameter even when sinusoidal
        (2 * dim, 1 + 2 * layers),  # LayerNorms: embeddings and two per layer
        (_linear(dim, dim), 4 * layers),  # q_lin, k_lin, v_lin, out_lin
        (_linear(dim, cfg["hidden_dim"]), layers),
        (_linear(cfg["hidden_dim"], dim), layers),
    ]
    if task == "classification":
        head = [(_linear(dim, dim), 1), (_linear(dim, num_labels), 1)]  # pre_classifier
        return modules + head, 0
    head = [(_linear(dim, dim), 1), (2 * dim, 1), (_linear(dim, vocab), 1)]
    shared = vocab * dim if cfg["tie_word_embeddings"] else 0
    return modules + head, shared


@dataclass(frozen=True)
class MemoryEstimate:
    """Model-state memory (no activations) per GPU, and per node in CPU memory, in bytes."""

    parameters: int
    gradients: int
    optimizer_states: int
    total: int
    cpu_total: int
    note: str


@dataclass(frozen=True)
class _Bytes:
    """Bytes per parameter of each model state; see the module docstring for the symbols."""

    w: int
    x: int
    m: int
    s: int

    @property
    def optimizer_side(self) -> int:
        """fp32 gradient + master + states: what the optimizer step touches, and offloads."""
        return 4 + self.m + self.s


def _bytes_per_parameter(precision: str, optimizer: str) -> _Bytes:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZER_STATE_BYTES)}"
        )
    mixed = precision in MIXED_PRECISIONS
    return _Bytes(
        w=2 if mixed else 4,
        x=4 if mixed else 0,
        m=4 if mixed else 0,
        s=OPTIMIZER_STATE_BYTES[optimizer],
    )


def _shards(params: int, gpus: int, *cumulative: int) -> list[int]:
    """Split `int(cumulative[-1] * params / gpus)` into parts that sum to it exactly.

    Each part is the difference of truncated cumulative sums, so the last one is computed with
    the very expression DeepSpeed truncates (`int(18 * total_params / total_gpus)`).
    """
    edges = [0, *(int(k * params / gpus) for k in cumulative)]
    return [high - low for low, high in itertools.pairwise(edges)]


@dataclass(frozen=True)
class _Setup:
    """The distributed setup the memory formulas depend on."""

    zero_stage: int
    offload_optimizer: bool
    offload_parameters: bool
    per_node: int
    nodes: int
    zero_init: bool
    buffer: float

    @property
    def gpus(self) -> int:
        return self.per_node * self.nodes


def estimate_memory(
    params: ParameterCount,
    *,
    zero_stage: int,
    offload_optimizer: bool,
    offload_parameters: bool,
    processes_per_node: int,
    nodes: int,
    precision: str,
    optimizer: str,
    zero_init: bool = True,
    additional_buffer_factor: float = 1.5,
) -> MemoryEstimate:
    """Estimate model-state memory per GPU and CPU memory per node.

    Stage 0 is DDP (or DeepSpeed without ZeRO), 1 shards optimizer states, 2 also gradients,
    3 also parameters. Activations, temporary buffers and the CUDA context are not included.
    """
    setup = _Setup(
        zero_stage=zero_stage,
        offload_optimizer=offload_optimizer,
        offload_parameters=offload_parameters,
        per_node=processes_per_node,
        nodes=nodes,
        zero_init=zero_init,
        buffer=additional_buffer_factor,
    )
    _check_setup(setup)
    per_param = _bytes_per_parameter(precision, optimizer)
    stage = _stage3 if zero_stage == 3 else _stage012
    parameters, gradients, optimizer_states, cpu = stage(params, per_param, setup)
    return MemoryEstimate(
        parameters=parameters,
        gradients=gradients,
        optimizer_states=optimizer_states,
        total=parameters + gradients + optimizer_states,
        cpu_total=cpu,
        note=_note(setup, precision, optimizer),
    )


def _check_setup(setup: _Setup) -> None:
    """Reject setups DeepSpeed rejects; recipe checks report these to users first."""
    if setup.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3 (got {setup.zero_stage})")
    if setup.offload_optimizer and setup.zero_stage == 0:
        raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3 (got 0)")
    if setup.offload_parameters and setup.zero_stage != 3:
        raise ValueError(f"offload_parameters needs zero_stage 3 (got {setup.zero_stage})")
    if setup.per_node < 1 or setup.nodes < 1:
        raise ValueError(
            f"processes_per_node ({setup.per_node}) and nodes ({setup.nodes}) must be >= 1"
        )


def _stage012(params: ParameterCount, b: _Bytes, setup: _Setup) -> tuple[int, int, int, int]:
    """(parameters, gradients, optimizer states, CPU per node) for stages 0, 1 and 2.

    Stage 0 follows the ZeRO paper: wP + wP + (m+s)P, 16 bytes/param for mixed-precision Adam
    (the same total as AMP's fp32 weights 4P + grads 4P + Adam 8P). Stages 1 and 2 run
    DeepSpeed's `stage_1_and_2` optimizer, which also keeps an fp32 gradient partition (x), as
    DeepSpeed's ZeRO-2 estimator counts: stage 2 is wP + int((w+x+m+s)P/N), stage 1 the same
    with the working gradients replicated (wP + wP + int((x+m+s)P/N)). With the optimizer
    offloaded the GPU keeps the weights (and, in stage 1, the gradients) and each node's CPU
    holds int(P * max(4N, 4+m+s) * b); otherwise each process loads fp32 weights on the CPU:
    int(4P * processes_per_node * b).
    """
    total, gpus, stage = params.total, setup.gpus, setup.zero_stage
    weights = b.w * total
    if setup.offload_optimizer:
        grads = b.w * total if stage == 1 else 0
        # Same operand order as DeepSpeed, so float rounding and truncation agree.
        cpu = total * max(4 * gpus, b.optimizer_side) * setup.buffer
        return weights, grads, 0, int(cpu)
    cpu = int(total * 4 * setup.per_node * setup.buffer)
    if stage == 0:
        return weights, b.w * total, (b.m + b.s) * total, cpu
    if stage == 1:
        grad_shard, opt_shard = _shards(total, gpus, b.x, b.x + b.m + b.s)
        return weights, b.w * total + grad_shard, opt_shard, cpu
    grad_shard, opt_shard = _shards(total, gpus, b.w + b.x, b.w + b.x + b.m + b.s)
    return weights, grad_shard, opt_shard, cpu


def _stage3(params: ParameterCount, b: _Bytes, setup: _Setup) -> tuple[int, int, int, int]:
    """(parameters, gradients, optimizer states, CPU per node) for ZeRO-3.

    As DeepSpeed's ZeRO-3 estimator: every GPU holds the largest layer's full weights and
    gradients (2wL, DeepSpeed's `4 * largest_layer_params`) plus its partition of w + 4+m+s
    bytes/param (DeepSpeed's 18: weights, fp32 gradients, master, states). Offloading the
    optimizer moves the 4+m+s part to CPU (DeepSpeed's 16), offloading parameters too moves w
    more (18), spread over the nodes. Parameters offloaded without the optimizer, a case
    DeepSpeed's estimator lacks, follow the same rule: the weight partition goes to CPU and the
    optimizer side stays on the GPU.
    """
    total, layer = params.total, params.largest_layer
    weight_bytes = 0 if setup.offload_parameters else b.w
    opt_bytes = 0 if setup.offload_optimizer else b.optimizer_side
    weight_shard, grad_shard, opt_shard = _shards(
        total,
        setup.gpus,
        weight_bytes,
        weight_bytes + (4 if opt_bytes else 0),
        weight_bytes + opt_bytes,
    )
    parameters = b.w * layer + weight_shard
    gradients = b.w * layer + grad_shard
    return parameters, gradients, opt_shard, _stage3_cpu(params, b, setup)


def _stage3_cpu(params: ParameterCount, b: _Bytes, setup: _Setup) -> int:
    """CPU bytes per node under ZeRO-3, in DeepSpeed's operand order (rounding must agree).

    Without offload, each process materializes the largest layer in fp32 (or, without
    zero_init, the whole model); offloaded states are spread over the nodes.
    """
    offloaded = (b.optimizer_side if setup.offload_optimizer else 0) + (
        b.w if setup.offload_parameters else 0
    )
    if not offloaded:
        loaded = params.largest_layer if setup.zero_init else params.total
        return int(loaded * 4 * setup.per_node * setup.buffer)
    node_share = offloaded * (1 / setup.nodes)
    factor = node_share if setup.zero_init else max(4 * setup.per_node, node_share)
    return int(params.total * factor * setup.buffer)


def _note(setup: _Setup, precision: str, optimizer: str) -> str:
    """One paragraph saying what the numbers include and where they come from."""
    parts = ["Model states only (no activations, buffers or CUDA context)."]
    zero_stage = setup.zero_stage
    if zero_stage >= 2 and precision in MIXED_PRECISIONS and OPTIMIZER_STATE_BYTES[optimizer] == 8:
        parts.append(f"Matches DeepSpeed's ZeRO-{zero_stage} estimator.")
    elif zero_stage == 0:
        parts.append("ZeRO paper accounting: weights + gradients + master/optimizer states.")
    else:
        parts.append("DeepSpeed's ZeRO estimator formula with this precision/optimizer's bytes.")
    if precision in MIXED_PRECISIONS:
        parts.append(f"{precision}: 16-bit weights and gradients, fp32 master weights.")
    else:
        parts.append("fp32: no master copy.")
    state_bytes = OPTIMIZER_STATE_BYTES[optimizer]
    parts.append(f"{optimizer}: {state_bytes} bytes/param of optimizer state.")
    if optimizer == "adafactor":
        parts.append("Adafactor's factored state is approximated as 4 bytes/param.")
    if optimizer.startswith("paged_"):
        parts.append(
            "Paged states are counted on the GPU; bitsandbytes pages them to CPU under pressure."
        )
    if setup.offload_optimizer or setup.offload_parameters:
        parts.append("CPU memory per node includes the offloaded states.")
    return " ".join(parts)


def format_bytes(n: int) -> str:
    """Format a byte count with binary units (1 GiB = 2**30 bytes), e.g. '26.69 GiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"
