"""Tests of launcher.plan.memory against real transformers models and DeepSpeed's estimators."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.plan.memory import (
    ARCHITECTURE_DEFAULTS,
    ParameterCount,
    count_parameters,
    estimate_memory,
    format_bytes,
    full_config,
)

REPO = Path(__file__).resolve().parents[1]

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
    ("llama", "sft"): "LlamaForCausalLM",
    ("llama", "classification"): "LlamaForSequenceClassification",
    ("distilbert", "mlm"): "DistilBertForMaskedLM",
    ("distilbert", "classification"): "DistilBertForSequenceClassification",
    ("bert", "mlm"): "BertForMaskedLM",
    ("bert", "classification"): "BertForSequenceClassification",
}


def _build(architecture: str, task: str, config: dict[str, Any], num_labels: int) -> Any:
    """Instantiate the real model from `full_config`, so the copied defaults are used too."""
    transformers = pytest.importorskip("transformers")
    cfg = full_config(architecture, config)
    if task == "classification":
        cfg["num_labels"] = num_labels
    config_class = getattr(transformers, CONFIG_CLASSES[architecture])
    return getattr(transformers, MODEL_CLASSES[architecture, task])(config_class(**cfg))


def _deepspeed_counts(model: Any) -> tuple[int, int]:
    """DeepSpeed's own (total_params, largest_layer_params) of a model."""
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
    return stage3.model_to_params(model)


@pytest.mark.parametrize(("architecture", "task"), sorted(MODEL_CLASSES))
def test_count_matches_real_model(architecture: str, task: str) -> None:
    model = _build(architecture, task, SMALL[architecture], num_labels=3)
    counted = count_parameters(architecture, SMALL[architecture], task, num_labels=3)
    assert counted.total == sum(p.numel() for p in model.parameters())
    assert (counted.total, counted.largest_layer) == _deepspeed_counts(model)


@pytest.mark.parametrize(("architecture", "extra"), VARIANTS)
def test_count_matches_real_model_variants(architecture: str, extra: dict[str, Any]) -> None:
    config = {**SMALL[architecture], **extra}
    for arch, task in MODEL_CLASSES:
        if arch != architecture:
            continue
        model = _build(architecture, task, config, num_labels=2)
        counted = count_parameters(architecture, config, task)
        assert (counted.total, counted.largest_layer) == _deepspeed_counts(model), task


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURE_DEFAULTS))
def test_defaults_match_transformers(architecture: str) -> None:
    transformers = pytest.importorskip("transformers")
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
        full_config("gpt2", {})
    with pytest.raises(ValueError, match="supports: sft, classification"):
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
    stage_1_and_2 = pytest.importorskip("deepspeed.runtime.zero.stage_1_and_2")
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
    stage3 = pytest.importorskip("deepspeed.runtime.zero.stage3")
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
        assert "DeepSpeed's ZeRO-3 estimator" in got.note


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
def test_8bit_adam_states_are_2_bytes(optimizer: str) -> None:
    # Stage 0 bf16: 2P weights + 2P grads + (fp32 master 4 + m,v 1+1)P.
    assert _estimate(P, optimizer=optimizer) == (
        2_000_000,
        2_000_000,
        6_000_000,
        10_000_000,
    )
    # fp32: 4P + 4P + 2P, no master copy.
    assert _estimate(P, optimizer=optimizer, precision="fp32")[2:] == (
        2_000_000,
        10_000_000,
    )
    # Stage 2, N=4: 2P weights; (2 + 4 fp32)P/4 grads; (4 master + 2)P/4.
    assert _estimate(P, zero_stage=2, optimizer=optimizer) == (
        2_000_000,
        1_500_000,
        1_500_000,
        5_000_000,
    )


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
    assert "approximated" in got.note


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


def test_import_does_not_load_torch() -> None:
    code = "import sys, launcher.plan.memory; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
