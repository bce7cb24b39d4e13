"""Tests of launcher.plan.memory against real transformers models and DeepSpeed's estimators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.architectures import ARCHITECTURE_DEFAULTS, full_config
from launcher.plan.memory import adam8bit_state_bytes, estimate_memory
from launcher.plan.parameters import ParameterCount, TensorGroup, count_parameters
from launcher.units import format_bytes

REPO = Path(__file__).resolve().parents[2]

# Small shapes in each architecture's own field names; everything else comes from the defaults.
SMALL: dict[str, dict[str, Any]] = {
    "mistral": {
        "vocab_size": 100,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "llama": {
        "vocab_size": 100,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
    "distilbert": {
        "vocab_size": 100,
        "dim": 32,
        "hidden_dim": 48,
        "n_layers": 2,
        "n_heads": 4,
        "max_position_embeddings": 64,
    },
    "bert": {
        "vocab_size": 100,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
    },
}

# Variants that exercise the less common branches: tying, explicit head_dim, biases.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("mistral", {"tie_word_embeddings": True}),
    ("mistral", {"head_dim": 16}),
    ("llama", {"attention_bias": True, "mlp_bias": True, "num_key_value_heads": 1}),
    ("llama", {"tie_word_embeddings": True, "vocab_size": 10}),
    ("bert", {"tie_word_embeddings": False, "type_vocab_size": 3}),
    ("distilbert", {"tie_word_embeddings": False}),
    ("distilbert", {"sinusoidal_pos_embds": True}),
]

CONFIG_CLASSES = {
    "mistral": "MistralConfig",
    "llama": "LlamaConfig",
    "distilbert": "DistilBertConfig",
    "bert": "BertConfig",
}
MODEL_CLASSES = {
    ("mistral", "sft"): "MistralForCausalLM",
    ("mistral", "classification"): "MistralForSequenceClassification",
    ("mistral", "token_classification"): "MistralForTokenClassification",
    ("llama", "sft"): "LlamaForCausalLM",
    ("llama", "classification"): "LlamaForSequenceClassification",
    ("llama", "token_classification"): "LlamaForTokenClassification",
    ("distilbert", "mlm"): "DistilBertForMaskedLM",
    ("distilbert", "classification"): "DistilBertForSequenceClassification",
    ("distilbert", "token_classification"): "DistilBertForTokenClassification",
    ("bert", "mlm"): "BertForMaskedLM",
    ("bert", "classification"): "BertForSequenceClassification",
    ("bert", "token_classification"): "BertForTokenClassification",
}


def _build(architecture: str, task: str, config: dict[str, Any], num_labels: int) -> Any:
    """Instantiate the real model from `full_config`, so the copied defaults are used too."""
    import transformers

    cfg = full_config(architecture, config)
    if task in ("classification", "token_classification"):
        cfg["num_labels"] = num_labels
    config_class = getattr(transformers, CONFIG_CLASSES[architecture])
    return getattr(transformers, MODEL_CLASSES[architecture, task])(config_class(**cfg))


def _deepspeed_counts(model: Any) -> tuple[int, int]:
    """DeepSpeed's own (total_params, largest_layer_params) of a model."""
    from deepspeed.runtime.zero import stage3

    return stage3.model_to_params(model)


def _tensor_layout(model: Any) -> list[tuple[int, bool, bool]]:
    """(values, owned by an nn.Embedding, weight-decayed) of each distinct parameter, as the
    Trainer groups them (its own `get_decay_parameter_names`) and bitsandbytes sizes them."""
    import torch
    from transformers import Trainer

    decayed = set(Trainer.get_decay_parameter_names(None, model))
    embedding = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    }
    return sorted(
        (p.numel(), id(p) in embedding, name in decayed) for name, p in model.named_parameters()
    )


def _counted_layout(counted: ParameterCount) -> list[tuple[int, bool, bool]]:
    return sorted(
        (group.numel, group.embedding, group.decay)
        for group in counted.tensors
        for _ in range(group.count)
    )


@pytest.mark.parametrize(("architecture", "task"), sorted(MODEL_CLASSES))
def test_count_matches_real_model(architecture: str, task: str) -> None:
    model = _build(architecture, task, SMALL[architecture], num_labels=3)
    counted = count_parameters(architecture, SMALL[architecture], task, num_labels=3)
    assert counted.total == sum(p.numel() for p in model.parameters())
    assert (counted.total, counted.largest_layer) == _deepspeed_counts(model)
    assert _counted_layout(counted) == _tensor_layout(model)


@pytest.mark.parametrize(("architecture", "extra"), VARIANTS)
def test_count_matches_real_model_variants(architecture: str, extra: dict[str, Any]) -> None:
    config = {**SMALL[architecture], **extra}
    for arch, task in MODEL_CLASSES:
        if arch != architecture:
            continue
        model = _build(architecture, task, config, num_labels=2)
        counted = count_parameters(architecture, config, task)
        assert (counted.total, counted.largest_layer) == _deepspeed_counts(model), task
        assert _counted_layout(counted) == _tensor_layout(model), task


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURE_DEFAULTS))
def test_defaults_match_transformers(architecture: str) -> None:
    import transformers

    signature_defaults = getattr(transformers, CONFIG_CLASSES[architecture])
    # Class attributes hold the declared defaults (head_dim None, not the derived value).
    for field, value in ARCHITECTURE_DEFAULTS[architecture].items():
        assert getattr(signature_defaults, field) == value, field
    # And the filled-in config builds the same config object as transformers' bare default.
    built = signature_defaults(**full_config(architecture, {})).to_dict()
    assert built == signature_defaults().to_dict()


def test_mistral_7b_default_count() -> None:
    # Mistral-7B-v0.1 has 7,241,732,096 parameters; the defaults are its shape.
    assert count_parameters("mistral", {}, "sft").total == 7_241_732_096
    assert count_parameters("mistral", {}, "sft").largest_layer == 32000 * 4096


def test_unknown_architecture_and_task() -> None:
    with pytest.raises(ValueError, match="known: mistral"):
        full_config("gpt3", {})  # gpt2 is a decoder transformers knows; gpt3 is none
    with pytest.raises(ValueError, match="supports: sft, classification, token_classification"):
        count_parameters("llama", {}, "mlm")


SETUPS = [
    # (total params, largest layer, gpus per node, nodes)
    (7_241_732_096, 131_072_000, 8, 1),
    (7_241_732_096, 131_072_000, 4, 2),
    (110_000_003, 23_440_896, 3, 5),
    (1_000_000_007, 1_234_567, 1, 1),
    (66_955_010, 23_440_896, 7, 3),
]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("optimizer", ["adamw_torch", "adamw_torch_fused", "paged_adamw_32bit"])
@pytest.mark.parametrize(("total", "layer", "per_node", "nodes"), SETUPS)
@pytest.mark.parametrize("offload", [False, True])
def test_stage2_matches_deepspeed(
    total: int,
    layer: int,
    per_node: int,
    nodes: int,
    offload: bool,
    precision: str,
    optimizer: str,
) -> None:
    from deepspeed.runtime.zero import stage_1_and_2

    for buffer in (1.5, 1.0, 1.3):
        cpu, gpu = stage_1_and_2.estimate_zero2_model_states_mem_needs(
            total, per_node, nodes, offload, buffer
        )
        got = estimate_memory(
            ParameterCount(total, layer),
            zero_stage=2,
            offload_optimizer=offload,
            offload_parameters=False,
            processes_per_node=per_node,
            nodes=nodes,
            precision=precision,
            optimizer=optimizer,
            additional_buffer_factor=buffer,
        )
        assert (got.total, got.cpu_total) == (gpu, cpu)
        assert got.parameters + got.gradients + got.optimizer_states == got.total


@pytest.mark.parametrize(("total", "layer", "per_node", "nodes"), SETUPS)
@pytest.mark.parametrize(
    ("offload_optimizer", "offload_parameters"),
    [(False, False), (True, False), (True, True)],
)
@pytest.mark.parametrize("zero_init", [True, False])
def test_stage3_matches_deepspeed(
    total: int,
    layer: int,
    per_node: int,
    nodes: int,
    offload_optimizer: bool,
    offload_parameters: bool,
    zero_init: bool,
) -> None:
    from deepspeed.runtime.zero import stage3

    for buffer in (1.5, 1.0, 1.3):
        cpu, gpu, _ = stage3.estimate_zero3_model_states_mem_needs(
            total,
            layer,
            per_node,
            nodes,
            offload_optimizer,
            offload_parameters,
            zero_init,
            buffer,
        )
        got = estimate_memory(
            ParameterCount(total, layer),
            zero_stage=3,
            offload_optimizer=offload_optimizer,
            offload_parameters=offload_parameters,
            processes_per_node=per_node,
            nodes=nodes,
            precision="bf16",
            optimizer="adamw_torch",
            zero_init=zero_init,
            additional_buffer_factor=buffer,
        )
        assert (got.total, got.cpu_total) == (gpu, cpu)
        assert got.parameters + got.gradients + got.optimizer_states == got.total


def _estimate(params: ParameterCount, **kwargs: Any) -> tuple[int, int, int, int]:
    defaults: dict[str, Any] = {
        "zero_stage": 0,
        "offload_optimizer": False,
        "offload_parameters": False,
        "processes_per_node": 4,
        "nodes": 1,
        "precision": "bf16",
        "optimizer": "adamw_torch",
    }
    got = estimate_memory(params, **{**defaults, **kwargs})
    return got.parameters, got.gradients, got.optimizer_states, got.total


P = ParameterCount(total=1_000_000, largest_layer=100_000)


def test_stage0_is_16_bytes_per_param_for_mixed_adam() -> None:
    # ZeRO paper: 2P weights + 2P grads + 12P (fp32 master 4 + m 4 + v 4).
    assert _estimate(P) == (2_000_000, 2_000_000, 12_000_000, 16_000_000)


def test_stage1_shards_optimizer_side() -> None:
    # N=4: 2P weights; 2P grads + fp32 grad partition 4P/4; (master 4 + Adam 8)P/4.
    assert _estimate(P, zero_stage=1) == (2_000_000, 3_000_000, 3_000_000, 8_000_000)


def test_fp32_has_no_master_copy() -> None:
    # Stage 0: 4P weights + 4P grads + 8P Adam.
    assert _estimate(P, precision="fp32") == (
        4_000_000,
        4_000_000,
        8_000_000,
        16_000_000,
    )
    # Stage 2, N=4: 4P weights; fp32 grads 4P/4; Adam 8P/4.
    assert _estimate(P, zero_stage=2, precision="fp32") == (
        4_000_000,
        1_000_000,
        2_000_000,
        7_000_000,
    )
    # Stage 3, N=4: largest layer weights + grads 4L + 4L; shards 4P/4, 4P/4, 8P/4.
    assert _estimate(P, zero_stage=3, precision="fp32") == (
        400_000 + 1_000_000,
        400_000 + 1_000_000,
        2_000_000,
        4_800_000,
    )


@pytest.mark.parametrize("optimizer", ["adamw_8bit", "paged_adamw_8bit"])
def test_8bit_adam_states_of_one_large_tensor(optimizer: str) -> None:
    # A bare count is one tensor: 2 uint8 states (2P) + an fp32 absmax per 256 values for each
    # (8 * ceil(P / 256)) + the two shared 256-entry fp32 quantization maps (2 KiB).
    states = 2 * 1_000_000 + 8 * 3907 + 2048
    # Stage 0 bf16: 2P weights + 2P grads + fp32 master 4P + the 8-bit states.
    assert _estimate(P, optimizer=optimizer) == (
        2_000_000,
        2_000_000,
        4_000_000 + states,
        8_000_000 + states,
    )
    # fp32: no master copy.
    assert _estimate(P, optimizer=optimizer, precision="fp32")[2] == states
    # Stage 2 under DeepSpeed, N=4: each rank's optimizer steps on a flat partition of P/4.
    shard_states = 2 * 250_000 + 8 * 977 + 2048
    assert _estimate(P, zero_stage=2, optimizer=optimizer, deepspeed=True) == (
        2_000_000,
        1_500_000,
        1_000_000 + shard_states,
        4_500_000 + shard_states,
    )


def test_8bit_adam_keeps_small_tensors_and_embeddings_in_32_bits() -> None:
    # 10 tensors of 4,095 values (under bitsandbytes' min_8bit_size of 4,096) and a 1,000-value
    # embedding keep two fp32 states each; one 4,096-value tensor is quantized (16 blocks).
    params = ParameterCount(
        total=10 * 4095 + 1000 + 4096,
        largest_layer=4096,
        tensors=(
            TensorGroup(4095, 10, embedding=False, decay=True),
            TensorGroup(1000, 1, embedding=True, decay=True),
            TensorGroup(4096, 1, embedding=False, decay=True),
        ),
    )
    states = 8 * (10 * 4095 + 1000) + 2 * 4096 + 8 * 16 + 2048
    got = estimate_memory(
        params,
        zero_stage=0,
        offload_optimizer=False,
        offload_parameters=False,
        processes_per_node=1,
        nodes=1,
        precision="fp32",
        optimizer="adamw_8bit",
    )
    assert got.optimizer_states == states
    assert "1,000 embedding parameters" in got.states_note
    assert "10 tensors under 4,096 values" in got.states_note
    # Only small tensors: nothing is quantized, so no quantization maps either.
    small = ParameterCount(4095, 4095, (TensorGroup(4095, 1, embedding=False, decay=True),))
    assert adam8bit_state_bytes(small, shards=1, flat=False) == 8 * 4095


def test_8bit_adam_cannot_be_offloaded() -> None:
    with pytest.raises(ValueError, match="CPUAdam"):
        _estimate(P, zero_stage=2, offload_optimizer=True, optimizer="adamw_8bit")


# Sizes chosen so that some tensors are under bitsandbytes' 4,096-value threshold (k/v
# projections 64 x 32, norms) and others over it (embeddings, q/o projections, MLP).
BNB_CONFIG = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}

BNB_SCRIPT = r"""
import json, os, sys, warnings
warnings.filterwarnings("ignore")
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                  MASTER_PORT=sys.argv[2])
import torch
from transformers import MistralConfig, MistralForCausalLM, Trainer, TrainingArguments
from launcher.architectures import full_config

def state_bytes(optimizer):
    tensors = {}  # by storage: the quantization maps are shared between parameters
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                tensors[value.data_ptr()] = value.numel() * value.element_size()
    return sum(tensors.values())

def trainer_optimizer(config, optim):
    # A real run builds one optimizer per process; bitsandbytes keeps the Trainer's overrides in
    # a process-wide singleton keyed by (group, index), which would leak into the next case.
    import bitsandbytes
    bitsandbytes.optim.GlobalOptimManager.get_instance().initialize()
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(**full_config("mistral", config)))
    args = TrainingArguments(output_dir=sys.argv[1], optim=optim, use_cpu=True, report_to=[],
                             weight_decay=0.1)
    return model, Trainer(model=model, args=args).create_optimizer()

config = json.loads(sys.argv[3])
results = {}
for tie in (False, True):
    for optim in ("adamw_8bit", "paged_adamw_8bit"):
        model, optimizer = trainer_optimizer({**config, "tie_word_embeddings": tie}, optim)
        for parameter in model.parameters():
            parameter.grad = torch.randn_like(parameter)
        optimizer.step()
        results[f"trainer {optim} tied={tie}"] = state_bytes(optimizer)

import deepspeed
deepspeed.init_distributed("gloo")
for stage in (2, 3):
    model, optimizer = trainer_optimizer(config, "adamw_8bit")
    ds_config = {"train_micro_batch_size_per_gpu": 1, "zero_allow_untested_optimizer": True,
                 "zero_optimization": {"stage": stage}}
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    ids = torch.randint(0, config["vocab_size"], (1, 16))
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    results[f"zero{stage}"] = state_bytes(optimizer)
print("RESULTS " + json.dumps(results))
"""


@pytest.mark.process
def test_8bit_adam_states_equal_bitsandbytes_own(tmp_path: Path) -> None:
    """The plan's 8-bit state bytes against the states bitsandbytes really allocates, through
    the Trainer's own optimizer (its 32-bit embedding override included) and under DeepSpeed
    ZeRO-2 and ZeRO-3 (flat partitions, one rank, CPU)."""
    import bitsandbytes  # noqa: F401  (a dependency: its absence is a failure, not a skip)
    import deepspeed  # noqa: F401

    port = str(20000 + os.getpid() % 20000)
    result = subprocess.run(
        [sys.executable, "-c", BNB_SCRIPT, str(tmp_path), port, json.dumps(BNB_CONFIG)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    measured = json.loads(lines[0].removeprefix("RESULTS "))

    def planned(config: dict[str, Any], optimizer: str, **setup: Any) -> int:
        params = count_parameters("mistral", config, "sft")
        return _estimate(
            params, processes_per_node=1, precision="fp32", optimizer=optimizer, **setup
        )[2]

    for tie in (False, True):
        config = {**BNB_CONFIG, "tie_word_embeddings": tie}
        for optimizer in ("adamw_8bit", "paged_adamw_8bit"):
            assert measured[f"trainer {optimizer} tied={tie}"] == planned(config, optimizer)
    for stage in (2, 3):
        assert measured[f"zero{stage}"] == planned(
            BNB_CONFIG, "adamw_8bit", zero_stage=stage, deepspeed=True
        )
    # The embedding override is what separates the two paths.
    assert measured["trainer adamw_8bit tied=False"] > measured["zero2"]


def test_sgd_and_adafactor() -> None:
    # SGD without momentum keeps only the fp32 master copy: 4P.
    assert _estimate(P, optimizer="sgd")[2] == 4_000_000
    assert _estimate(P, optimizer="sgd", precision="fp32")[2] == 0
    # Adafactor approximated as 4 bytes/param, plus the master copy.
    got = estimate_memory(
        P,
        zero_stage=0,
        offload_optimizer=False,
        offload_parameters=False,
        processes_per_node=1,
        nodes=1,
        precision="bf16",
        optimizer="adafactor",
    )
    assert got.optimizer_states == 8_000_000
    assert got.states_note == (
        "optimizer states = the fp32 master weights (4 bytes/param) + adafactor states: "
        "factored second moment, approximated as 4 bytes/param"
    )  # 8,000,000 = (4 + 4) x 1,000,000


def test_offloaded_optimizer_leaves_gpu() -> None:
    # Stage 2 offload: only the 16-bit weights stay; CPU max(4*4, 4+4+8)P * 1.5 per node.
    params, grads, states, total = _estimate(P, zero_stage=2, offload_optimizer=True)
    assert (params, grads, states, total) == (2_000_000, 0, 0, 2_000_000)
    # Stage 1 offload keeps the replicated 16-bit gradients too.
    assert _estimate(P, zero_stage=1, offload_optimizer=True)[3] == 4_000_000


def test_parameters_offloaded_without_optimizer() -> None:
    # Stage 3, N=4: gathered layer 2L + 2L; fp32 grads 4P/4; (master 4 + Adam 8)P/4.
    assert _estimate(P, zero_stage=3, offload_parameters=True) == (
        200_000,
        200_000 + 1_000_000,
        3_000_000,
        4_400_000,
    )


def test_invalid_setups() -> None:
    with pytest.raises(ValueError, match="zero_stage 1, 2 or 3"):
        _estimate(P, zero_stage=0, offload_optimizer=True)
    with pytest.raises(ValueError, match="needs zero_stage 3"):
        _estimate(P, zero_stage=2, offload_parameters=True)
    with pytest.raises(ValueError, match="known: fp32"):
        _estimate(P, precision="int8")
    with pytest.raises(ValueError, match="known: adamw_torch"):
        _estimate(P, optimizer="lion")


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(2048) == "2.00 KiB"
    assert format_bytes(28_659_000_000) == "26.69 GiB"
    assert format_bytes(3 * 2**40) == "3.00 TiB"


@pytest.mark.process
def test_import_does_not_load_torch() -> None:
    code = "import sys, launcher.plan.memory; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def _summary_memory_lines(*overrides: str) -> list[str]:
    from launcher.plan.build import build_plan
    from launcher.recipe.loader import load_recipe

    recipe = load_recipe(REPO / "recipes" / "sft-mistral.yaml", list(overrides))
    summary = build_plan(recipe, Path("/runs/memory"), overrides=overrides).summary()
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("memory/device"))
    # The row, and its continuation line (indented) when there is one.
    return [
        lines[start],
        *[line.strip() for line in lines[start + 1 : start + 2] if line[0] == " "],
    ]


def test_plan_shows_how_bitsandbytes_states_are_counted() -> None:
    # The shipped recipe's paged AdamW: 8 bytes/param, and where paged states live.
    memory, states = _summary_memory_lines()
    assert "optimizer states 16.09 GiB" in memory  # (4 master + 8) x 1,439,795,200 params
    assert states.startswith(
        "optimizer states = the fp32 master weights (4 bytes/param) + paged_adamw_32bit states: "
        "32-bit states, 8 bytes/param"
    )
    assert "CUDA unified memory" in states
    # 8-bit under DDP: the Trainer keeps the 32000 x 2048 embedding's states in 32 bits.
    memory, states = _summary_memory_lines("training.optimizer=adamw_8bit")
    assert "65,536,000 embedding parameters" in states
    assert "49 tensors under 4,096 values" in states  # the RMSNorm weights (2048 values)
    assert "CUDA unified memory" not in states
    # Under DeepSpeed the optimizer sees flat partitions: no embedding override.
    _, states = _summary_memory_lines(
        "training.optimizer=paged_adamw_8bit",
        "distributed.strategy=deepspeed",
        "distributed.zero_stage=2",
    )
    assert "flat fp32 partitions" in states and "CUDA unified memory" in states
    # A torch optimizer's line says what its 16.09 GiB hold: 4 + 8 bytes per parameter.
    memory, states = _summary_memory_lines("training.optimizer=adamw_torch")
    assert "optimizer states 16.09 GiB" in memory
    assert states == (
        "optimizer states = the fp32 master weights (4 bytes/param) + adamw_torch states: "
        "8 bytes/param"
    )


@pytest.mark.parametrize("task", ["mlm", "classification"])
def test_distilbert_counted_under_transformers_generic_names(task: str) -> None:
    """`hidden_size`, `num_hidden_layers`, `num_attention_heads` (DistilBertConfig's aliases of
    dim, n_layers, n_heads) plan the model transformers builds from them."""
    generic = {
        "vocab_size": 100, "hidden_size": 32, "hidden_dim": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4,
    }  # fmt: skip
    model = _build("distilbert", task, generic, num_labels=2)
    counted = count_parameters("distilbert", generic, task)
    assert counted.total == sum(p.numel() for p in model.parameters())
    assert (counted.total, counted.largest_layer) == _deepspeed_counts(model)
