"""The plan's LoRA and QLoRA numbers: adapter and head counts against real peft models of every
architecture and task, QLoRA memory of a 7B model against a hand computation, and the plan rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from launcher.plan.adapters import (
    NF4_BYTES_PER_WEIGHT,
    AdapterCount,
    adapter_memory,
    count_adapters,
)
from launcher.plan.build import build_plan
from launcher.plan.parameters import count_parameters
from launcher.recipe.loader import load_recipe

REPO = Path(__file__).resolve().parents[2]
SMALL: dict[str, dict[str, Any]] = {
    "mistral": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50},
    "llama": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 50},
    "bert": {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
             "num_attention_heads": 4, "vocab_size": 50},
    "distilbert": {"dim": 32, "hidden_dim": 48, "n_layers": 2, "n_heads": 4, "vocab_size": 50},
}  # fmt: skip
TASKS = {
    "mistral": ("sft", "classification", "token_classification"),
    "llama": ("sft", "classification", "token_classification"),
    "bert": ("mlm", "classification", "token_classification"),
    "distilbert": ("mlm", "classification", "token_classification"),
}
CASES = [(arch, task) for arch, tasks in TASKS.items() for task in tasks]


def peft_model(architecture: str, task: str, targets: Any, labels: int) -> Any:
    import transformers

    from launcher.architectures import TASK_MODELS, full_config

    config_class = {"mistral": "MistralConfig", "llama": "LlamaConfig", "bert": "BertConfig",
                    "distilbert": "DistilBertConfig"}[architecture]  # fmt: skip
    fields = full_config(architecture, SMALL[architecture])
    if task != "sft" and task != "mlm":
        fields["num_labels"] = labels
    config = getattr(transformers, config_class)(**fields)
    model = getattr(transformers, TASK_MODELS[architecture][task])(config)
    from launcher.ranks.adapters import add_adapters
    from launcher.recipe.schema import Recipe

    recipe = Recipe.model_validate(
        {"name": "x", "task": task, "model": {"architecture": architecture,
         "lora": {"r": 4, "target_modules": targets}}}
    )  # fmt: skip
    return add_adapters(recipe, model)  # the rank's own wrapping


@pytest.mark.parametrize(("architecture", "task"), CASES)
@pytest.mark.parametrize("targets", ["all-linear", "named"])
def test_counts_match_real_peft_models(architecture: str, task: str, targets: str) -> None:
    names = {"mistral": ["q_proj", "v_proj"], "llama": ["k_proj", "down_proj"],
             "bert": ["query", "value"], "distilbert": ["q_lin", "lin2"]}  # fmt: skip
    chosen = "all-linear" if targets == "all-linear" else names[architecture]
    model = peft_model(architecture, task, chosen, labels=3)
    trainable, total = model.get_nb_trainable_parameters()
    base = count_parameters(architecture, SMALL[architecture], task, 3).total
    counted = count_adapters(architecture, SMALL[architecture], task, 3, 4, chosen, base)
    assert counted.trainable == trainable
    # peft counts the head's trained copy on top of the frozen original.
    assert counted.total + counted.adapters + counted.head == total


def test_qlora_7b_memory_by_hand() -> None:
    """Mistral-7B (the defaults), QLoRA r=16 on all linear layers, one GPU, bf16 adapters."""
    total = count_parameters("mistral", {}, "sft").total
    count = count_adapters("mistral", {}, "sft", 2, 16, "all-linear", total)
    # Per layer: q 16*(4096+4096), k and v 16*(4096+1024) each, o 16*(4096+4096),
    # gate and up 16*(4096+14336) each, down 16*(14336+4096); 32 layers.
    per_layer = 16 * (8192 + 5120 + 5120 + 8192 + 18432 + 18432 + 18432)
    assert count.adapters == 32 * per_layer == 41_943_040
    # Linear weights: 32 x (4096*4096*2 + 4096*1024*2 + 3*4096*14336); the rest (embeddings,
    # norms, lm_head) stays bf16.
    linear = 32 * (4096 * 4096 * 2 + 4096 * 1024 * 2 + 3 * 4096 * 14336)
    assert count.linear_weights == linear == 6_979_321_856
    memory = adapter_memory(count, "4bit", "bf16", zero_stage=0, gpus=1, trainable_bytes=2)
    frozen = linear * (0.5 + 1 / 64 + 4 / (64 * 256)) + (total - linear) * 2
    assert NF4_BYTES_PER_WEIGHT == pytest.approx(0.515869140625)
    assert memory.frozen == pytest.approx(frozen)
    assert memory.frozen / 2**30 == pytest.approx(3.84, abs=0.01)  # 3.84 GiB, not 13.5 in bf16
    assert memory.optimizer_states == 8 * 41_943_040
    assert memory.total / 2**30 == pytest.approx(4.31, abs=0.01)


def test_zero_shards_what_each_stage_shards() -> None:
    count = AdapterCount(adapters=1000, head=0, linear_weights=8000, total=10_000)
    plain = adapter_memory(count, "none", "bf16", zero_stage=0, gpus=4)
    two = adapter_memory(count, "none", "bf16", zero_stage=2, gpus=4)
    three = adapter_memory(count, "none", "bf16", zero_stage=3, gpus=4)
    assert (plain.frozen, plain.gradients, plain.optimizer_states) == (20_000, 4000, 8000)
    assert (two.frozen, two.gradients, two.optimizer_states) == (20_000, 1000, 2000)
    assert (three.frozen, three.trainable_weights) == (5000, 1000)


def test_plan_shows_trainable_and_frozen(tmp_path: Path) -> None:
    recipe = load_recipe(
        REPO / "recipes" / "sft-mistral.yaml",
        ["model.lora={r: 16, target_modules: [q_proj, v_proj]}", "model.quantization=4bit"],
    )
    summary = build_plan(recipe, tmp_path / "run").summary()
    assert "adapters       LoRA r=16 alpha=32 on q_proj, v_proj: trainable" in summary
    assert "(linear layers in 4-bit NF4)" in summary
    assert "memory/device" in summary and "frozen weights" in summary


# Decoders of other families (launcher.plan.decoders): the layers peft finds, named as it sees
# them (GPT-2's Conv1D layers, Falcon's FalconLinear), in the smoke's tiny sizes.
FAMILIES = {"qwen2": ["q_proj", "v_proj"], "phi3": ["qkv_proj"], "gpt2": ["c_attn", "c_proj"],
            "falcon": ["query_key_value"], "gemma": ["o_proj", "down_proj"],
            "starcoder2": ["c_fc"], "stablelm": ["k_proj"]}  # fmt: skip


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("task", ["sft", "classification"])
@pytest.mark.parametrize("targets", ["all-linear", "named"])
def test_family_counts_match_real_peft_models(family: str, task: str, targets: str) -> None:
    import transformers

    from launcher.architectures import tiny_config
    from launcher.ranks.adapters import add_adapters
    from launcher.recipe.schema import Recipe

    chosen = "all-linear" if targets == "all-linear" else FAMILIES[family]
    fields = {**tiny_config(family), "vocab_size": 50, "pad_token_id": 0, "bos_token_id": None,
              "eos_token_id": None}  # fmt: skip
    head = {"num_labels": 3} if task == "classification" else {}
    config = transformers.AutoConfig.for_model(family, **fields, **head)
    auto = (
        transformers.AutoModelForCausalLM
        if task == "sft"
        else transformers.AutoModelForSequenceClassification
    )
    recipe = Recipe.model_validate(
        {"name": "x", "task": task, "model": {"architecture": family,
         "lora": {"r": 4, "target_modules": chosen}}}
    )  # fmt: skip
    model = add_adapters(recipe, auto.from_config(config))
    trainable, total = model.get_nb_trainable_parameters()
    base = count_parameters(family, fields, task, 3).total
    counted = count_adapters(family, fields, task, 3, 4, chosen, base)
    assert counted.trainable == trainable
    assert counted.total + counted.adapters + counted.head == total
