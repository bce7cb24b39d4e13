"""Per-device memory estimates for `launcher plan` (parameter counts: ``plan/parameters.py``).

Standard library only: `launcher plan` runs on login nodes where importing torch is slow, so the
memory formulas are copied from DeepSpeed instead of imported (tests compare them with it).

Byte symbols used throughout (P = parameters, L = parameters of the largest layer, N = GPUs in
the job, n = nodes, b = `additional_buffer_factor`):

- ``w``: bytes of a working weight and of its working gradient (2 for bf16/fp16, 4 for fp32);
- ``x``: bytes of the extra fp32 gradient partition the mixed-precision optimizer step reads
  (4 for bf16/fp16, 0 for fp32, where the gradient already is fp32);
- ``m``: bytes of the fp32 master weight (4 for bf16/fp16, 0 for fp32);
- ``s``: bytes of optimizer state (Adam 8, Adafactor ~4, SGD 0; bitsandbytes' 8-bit Adam about
  2, counted tensor by tensor by :func:`adam8bit_state_bytes`).

For bf16/fp16 with 32-bit Adam (w=2, x=4, m=4, s=8) stages 2 and 3 reproduce DeepSpeed's
`estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs` exactly,
integer truncation included.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

from launcher.plan.parameters import ParameterCount, TensorGroup

MIXED_PRECISIONS = ("bf16", "fp16")
EIGHT_BIT_OPTIMIZERS = ("adamw_8bit", "paged_adamw_8bit")
# bitsandbytes 8-bit states: smaller tensors keep fp32 states (the optimizers' `min_8bit_size`
# default), one fp32 absmax per block of 256 values, and two 256-entry fp32 quantization maps.
BNB_MIN_8BIT_SIZE = 4096
BNB_BLOCK_SIZE = 256
BNB_QMAP_BYTES = 2 * 256 * 4
PAGED_NOTE = (
    "paged: in CUDA unified memory, counted on the GPU here; under GPU memory pressure the "
    "driver moves them to CPU memory (slower steps instead of out-of-memory)"
)
PRECISIONS = ("fp32", *MIXED_PRECISIONS)

# Bytes of optimizer state per parameter, the fp32 master copy not included.
OPTIMIZER_STATE_BYTES: dict[str, int] = {
    "adamw_torch": 8,  # m and v in fp32
    "adamw_torch_fused": 8,
    "paged_adamw_32bit": 8,
    "adamw_8bit": 2,  # m and v in 1 byte each; exact sizes: `adam8bit_state_bytes`
    "paged_adamw_8bit": 2,
    "adafactor": 4,  # factored second moment, no momentum: approximated as 4 bytes
    "sgd": 0,  # Trainer's SGD has no momentum
}


class MemoryEstimate(NamedTuple):
    """Model-state memory (no activations) per GPU, and per node in CPU memory, in bytes.

    ``cpu_total`` is what ZeRO offload keeps in each node's CPU memory (the plan shows it when
    something is offloaded); ``states_note`` says what the optimizer states hold and how they
    were counted (the plan shows it too).
    """

    parameters: int
    gradients: int
    optimizer_states: int
    total: int
    cpu_total: int
    states_note: str = ""


class _Bytes(NamedTuple):
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


class _Setup(NamedTuple):
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
    deepspeed: bool = False,
) -> MemoryEstimate:
    """Estimate model-state memory per GPU and CPU memory per node.

    Stage 0 is DDP (or DeepSpeed without ZeRO), 1 shards optimizer states, 2 also gradients,
    3 also parameters. Activations, temporary buffers and the CUDA context are not included.
    ``deepspeed`` says whether DeepSpeed runs the optimizer, which changes the tensors an 8-bit
    optimizer sees (see :func:`adam8bit_state_bytes`).
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
    states_note = ""
    exact_states = 0
    if optimizer in EIGHT_BIT_OPTIMIZERS:
        if offload_optimizer:
            raise ValueError(
                f"{optimizer} cannot be offloaded: DeepSpeed would run CPUAdam in its place"
            )
        # The master copy follows the stage formulas; the 8-bit states are counted exactly.
        flat = deepspeed and (zero_stage >= 1 or precision in MIXED_PRECISIONS)
        exact_states = adam8bit_state_bytes(params, setup.gpus if zero_stage else 1, flat)
        per_param = per_param._replace(s=0)
        states_note = _adam8bit_note(params, flat)
    if optimizer == "adafactor":
        states_note = "factored second moment, approximated as 4 bytes/param"
    if optimizer.startswith("paged_"):
        states_note = f"{states_note or '32-bit states, 8 bytes/param'}; {PAGED_NOTE}"
    stage = _stage3 if zero_stage == 3 else _stage012
    parameters, gradients, optimizer_states, cpu = stage(params, per_param, setup)
    optimizer_states += exact_states
    return MemoryEstimate(
        parameters=parameters,
        gradients=gradients,
        optimizer_states=optimizer_states,
        total=parameters + gradients + optimizer_states,
        cpu_total=cpu,
        states_note=optimizer_states_note(optimizer, per_param, states_note),
    )


def optimizer_states_note(optimizer: str, per_param: _Bytes, detail: str) -> str:
    """What "optimizer states" holds: under mixed precision the fp32 master copy of the weights
    too (the optimizer steps on it), then the optimizer's own states."""
    detail = detail or f"{per_param.s} bytes/param"
    master = "the fp32 master weights (4 bytes/param) + " if per_param.m else ""
    return f"optimizer states = {master}{optimizer} states: {detail}"


def adam8bit_state_bytes(params: ParameterCount, shards: int, flat: bool) -> int:
    """Bytes of bitsandbytes' 8-bit Adam states per device, as bitsandbytes 0.45-0.50 allocate
    them (``Optimizer2State.init_state``; checked against real ``AdamW8bit`` states in
    tests/plan/test_memory.py).

    Per tensor of n values: two uint8 states (2n bytes) and one fp32 scale per block of 256
    values for each (8 * ceil(n / 256) bytes); a tensor under ``min_8bit_size`` (4096 values)
    keeps two fp32 states (8n bytes); the two 256-entry quantization maps are shared (2 KiB).
    Under the Trainer alone the optimizer sees the model's own tensors, and the Trainer keeps
    every ``nn.Embedding``'s states in 32 bits. Under DeepSpeed (``flat``) it sees one flat fp32
    partition per parameter group (the Trainer's decay and no-decay groups) and per device,
    so neither exception reaches it.
    """
    tensors = params.tensors or (TensorGroup(params.total, 1, embedding=False, decay=True),)
    if flat:
        groups = [
            sum(t.numel * t.count for t in tensors if t.decay == decay) for decay in (True, False)
        ]
        sizes = [(-(-group // shards), 1) for group in groups if group]
        embedding = 0
    else:
        sizes = [(t.numel, t.count) for t in tensors if not t.embedding]
        embedding = sum(t.numel * t.count for t in tensors if t.embedding)
    quantized = any(numel >= BNB_MIN_8BIT_SIZE for numel, _ in sizes)
    states = sum(_adam8bit_tensor_bytes(numel) * count for numel, count in sizes)
    return states + 8 * embedding + (BNB_QMAP_BYTES if quantized else 0)


def _adam8bit_tensor_bytes(numel: int) -> int:
    if numel < BNB_MIN_8BIT_SIZE:
        return 8 * numel
    blocks = -(-numel // BNB_BLOCK_SIZE)
    return 2 * numel + 2 * 4 * blocks


def _adam8bit_note(params: ParameterCount, flat: bool) -> str:
    """What the plan says about 8-bit states: the rule, and what it leaves in 32 bits."""
    rule = "8-bit states, 2 bytes/param + an fp32 scale per 256 values"
    if flat:
        return f"{rule}, on DeepSpeed's flat fp32 partitions"
    kept = []
    embedding = sum(t.numel * t.count for t in params.tensors if t.embedding)
    small = [t for t in params.tensors if not t.embedding and t.numel < BNB_MIN_8BIT_SIZE]
    if embedding:
        kept.append(f"{embedding:,} embedding parameters (the Trainer's override)")
    if small:
        count = sum(t.count for t in small)
        kept.append(f"{count:,} tensors under {BNB_MIN_8BIT_SIZE:,} values")
    return f"{rule}; 32-bit states (8 bytes/param) for {' and '.join(kept)}" if kept else rule


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
