"""The architectures the launcher builds (launcher/architectures.py) against the installed
transformers: the config fields the plan checks `model.config` against (when a release adds or
renames a field, this fails and prints the lists to paste); every decoder family's parameter count
(launcher/plan/decoders.py) against the real model; the smoke's tiny models of other families,
built and trained a step; a pretrained model's config.json read from its folder or the hub cache;
and the plan of such recipes, which imports neither torch nor transformers."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.architectures import (
    COMMON_CONFIG_FIELDS,
    CONFIG_ALIASES,
    CONFIG_FIELDS,
    DECODERS,
    HAND_CONFIG_FIELDS,
    TINY_CONFIGS,
    composite_reason,
    full_config,
    own_names,
    tiny_config,
    unknown_config_fields,
)
from launcher.plan.decoders import FAMILIES
from launcher.plan.model_config import ModelConfig, cached_config_file, read_model_config
from launcher.plan.parameters import UnknownCount, count_parameters

REPO = Path(__file__).resolve().parents[2]

CONFIG_CLASSES = {
    "mistral": "MistralConfig",
    "llama": "LlamaConfig",
    "distilbert": "DistilBertConfig",
    "bert": "BertConfig",
}
ACCEPTED_OLD_NAMES = {"rope_theta", "rope_scaling", "torch_dtype"}


def fields_of(config_class) -> set[str]:  # type: ignore[no-untyped-def]
    return (
        set(inspect.signature(config_class.__init__).parameters) | set(config_class().to_dict())
    ) - {
        "self",
        "kwargs",
    }


@pytest.mark.parametrize("architecture", sorted(HAND_CONFIG_FIELDS))
def test_fields_are_those_of_the_installed_transformers(architecture: str) -> None:
    import transformers

    config_class = getattr(transformers, CONFIG_CLASSES[architecture])
    common = fields_of(transformers.PretrainedConfig)
    own = fields_of(config_class) - common
    assert COMMON_CONFIG_FIELDS - ACCEPTED_OLD_NAMES == common, sorted(common)
    assert CONFIG_FIELDS[architecture] - ACCEPTED_OLD_NAMES == own, sorted(own)
    assert CONFIG_ALIASES.get(architecture, {}) == config_class.attribute_map


def test_old_names_are_still_read() -> None:
    from transformers import MistralConfig

    config = MistralConfig(rope_theta=1e6, rope_scaling={"rope_type": "linear", "factor": 2.0})
    assert config.rope_parameters["rope_theta"] == 1e6
    assert config.rope_parameters["factor"] == 2.0


def test_unknown_fields_and_aliases() -> None:
    config = {"n_layers": 2, "num_attention_heads": 4, "num_hiden_layers": 3, "dtype": "float32"}
    assert unknown_config_fields("distilbert", config) == ["num_hiden_layers"]
    # Every generated decoder's fields are checked too, under its own names and aliases.
    assert unknown_config_fields("gpt2", {"n_embd": 8, "hidden_size": 8, "n_embed": 8}) == [
        "n_embed"
    ]
    assert unknown_config_fields("qwen2", {"rope_theta": 1e6, "use_sliding_windw": True}) == [
        "use_sliding_windw"
    ]
    assert own_names("gpt2", {"hidden_size": 8, "n_layer": 2}) == {"n_embd": 8, "n_layer": 2}
    assert CONFIG_FIELDS["mistral"] == HAND_CONFIG_FIELDS["mistral"]
    assert own_names("distilbert", {"hidden_size": 8, "dim": 4}) == {"dim": 4}
    assert own_names("bert", {"hidden_size": 8}) == {"hidden_size": 8}


# --- every decoder transformers knows --------------------------------------------------------

# Each counted family with its switches turned (own field names, over the smoke's tiny sizes).
FAMILY_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("qwen2", {}),
    ("qwen2", {"tie_word_embeddings": True, "num_key_value_heads": 4}),
    ("qwen3", {}),
    ("qwen3", {"attention_bias": True, "head_dim": 32}),
    ("gemma", {}),
    ("gemma", {"head_dim": 32, "attention_bias": True, "tie_word_embeddings": False}),
    ("gemma2", {}),
    ("gemma3_text", {}),
    ("phi3", {}),
    ("phi3", {"num_key_value_heads": None, "tie_word_embeddings": True}),
    ("phi", {}),
    ("phi", {"qk_layernorm": True, "tie_word_embeddings": True, "num_key_value_heads": 2}),
    ("gpt2", {}),  # n_inner unset: 4 x n_embd
    ("gpt2", {"n_inner": 96, "tie_word_embeddings": False, "n_positions": 64}),
    ("gpt2", {"add_cross_attention": True}),
    ("falcon", {}),  # multi-query, parallel attention, one LayerNorm, ffn_hidden_size unset
    ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2, "bias": True}),
    ("falcon", {"new_decoder_architecture": True, "num_ln_in_parallel_attn": 1}),
    ("falcon", {"multi_query": False, "parallel_attn": False, "ffn_hidden_size": 96}),
    ("gpt_neox", {}),
    ("gpt_neox", {"attention_bias": False, "tie_word_embeddings": True}),
    ("starcoder2", {}),
    ("starcoder2", {"use_bias": False, "tie_word_embeddings": False}),
    ("stablelm", {}),
    ("stablelm", {"use_qkv_bias": True, "qk_layernorm": True, "use_parallel_residual": True}),
    ("olmo", {}),
    ("olmo2", {}),
    ("granite", {"mlp_bias": True, "attention_bias": True}),
    ("ministral", {}),
    ("llama", {"head_dim": 32, "mlp_bias": True}),
    ("mistral", {"tie_word_embeddings": True}),
]
# The smoke families the issue names, built and trained a step from their tiny configs.
SMOKE_FAMILIES = ("qwen2", "gemma", "phi3", "gpt2", "falcon", "qwen3", "starcoder2", "mixtral")


def family_fields(model_type: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The smoke's tiny sizes of ``model_type``, a vocabulary of 100, no special-token ids (a
    default such as Phi-3's pad 32000 would lie outside it), and ``extra``."""
    ids = {"pad_token_id": None, "bos_token_id": None, "eos_token_id": None}
    return {**tiny_config(model_type), "vocab_size": 100, **ids, **extra}


def real_model(model_type: str, fields: dict[str, Any], task: str, labels: int = 3) -> Any:
    """The model transformers builds from ``fields`` over ITS OWN defaults (not the launcher's
    copy of them), as ``AutoConfig.for_model`` in the ranks."""
    import warnings

    import transformers

    warnings.filterwarnings("ignore", module="transformers")
    head = {} if task == "sft" else {"num_labels": labels}
    config = transformers.AutoConfig.for_model(model_type, **fields, **head)
    auto = {
        "sft": transformers.AutoModelForCausalLM,
        "classification": transformers.AutoModelForSequenceClassification,
        "token_classification": transformers.AutoModelForTokenClassification,
    }[task]
    return auto.from_config(config)


def tasks_of(model_type: str) -> list[str]:
    from transformers.models.auto import modeling_auto as auto

    heads = {
        "classification": auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        "token_classification": auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
    }
    return ["sft", *(task for task, mapping in heads.items() if model_type in mapping)]


@pytest.mark.parametrize(("model_type", "extra"), FAMILY_VARIANTS, ids=str)
def test_family_count_matches_the_real_model(model_type: str, extra: dict[str, Any]) -> None:
    """Total, DeepSpeed's largest layer, and every tensor's size, embedding flag and weight
    decay, as the 8-bit optimizers and ZeRO-3 see them, for each task the family has."""
    from test_memory import _counted_layout, _deepspeed_counts, _tensor_layout

    fields = family_fields(model_type, extra)
    for task in tasks_of(model_type):
        model = real_model(model_type, fields, task)
        counted = count_parameters(model_type, fields, task, num_labels=3)
        assert counted.total == sum(p.numel() for p in model.parameters()), task
        assert (counted.total, counted.largest_layer) == _deepspeed_counts(model), task
        assert _counted_layout(counted) == _tensor_layout(model), task


def test_uncounted_families_say_why() -> None:
    with pytest.raises(UnknownCount, match="no parameter formula for mixtral"):
        count_parameters("mixtral", {}, "sft")
    with pytest.raises(UnknownCount, match="the gemma3 config nests other configs"):
        count_parameters("gemma3", {}, "sft")
    with pytest.raises(UnknownCount, match="no whole number hidden_size"):
        count_parameters("qwen2", {"hidden_size": None}, "sft")


def test_declared_defaults_build_transformers_own_config() -> None:
    """``full_config`` of every flat decoder, with nothing set, is transformers' default config:
    the copied declared defaults are the class's, and passing them changes nothing."""
    import warnings

    from transformers import AutoConfig

    warnings.filterwarnings("ignore", module="transformers")
    for model_type in DECODERS:
        if composite_reason(model_type):
            continue
        try:
            bare = AutoConfig.for_model(model_type).to_dict()
        except Exception:  # a class that cannot be built bare (gemma4_assistant)
            continue
        assert AutoConfig.for_model(model_type, **full_config(model_type, {})).to_dict() == bare


class CountingTokenizer:
    """What ``model_from_config`` reads of a tokenizer: its length."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size


@pytest.mark.parametrize("model_type", SMOKE_FAMILIES)
def test_smoke_model_of_a_family_builds_and_trains(model_type: str) -> None:
    """The rank's own ``model_from_config`` builds the tiny model ``--smoke`` asks for (default
    special-token ids outside the tokenizer's 512 tokens dropped), small, and a training step
    runs on it."""
    import torch

    from launcher.ranks.model import model_from_config
    from launcher.recipe.schema import Recipe

    tiny = tiny_config(model_type)
    recipe = Recipe.model_validate(
        {"name": "t", "task": "sft", "model": {"architecture": model_type, "config": tiny}}
    )
    model = model_from_config(recipe, CountingTokenizer(512), {"eos_token_id": 2}, {})
    assert model.config.model_type == model_type
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    ids = torch.randint(0, 512, (2, 16))
    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    assert torch.isfinite(loss)
    if model_type in FAMILIES:  # counted: the plan's number is this model's
        fields = {**tiny, "vocab_size": 512}
        assert count_parameters(model_type, fields, "sft").total == sum(
            p.numel() for p in model.parameters()
        )


def test_tiny_config_uses_each_family_s_own_names() -> None:
    assert tiny_config("gpt2") == {"n_embd": 64, "n_layer": 2, "n_head": 4}  # n_inner: 4 x 64
    assert tiny_config("qwen3") == {
        "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128,
    }  # fmt: skip
    assert tiny_config("falcon") == {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}  # fmt: skip
    assert tiny_config("mixtral")["num_local_experts"] == 4
    assert tiny_config("mistral") == TINY_CONFIGS["mistral"]
    with pytest.raises(ValueError, match="nests other configs"):
        tiny_config("gemma3")


# --- config.json of a pretrained model: local folder, hub cache ----------------------------

QWEN2_TINY = {
    "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 300, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}  # fmt: skip


def fake_hub_cache(root: Path, repo_id: str, config: dict[str, Any]) -> Path:
    """The hub cache layout of one model: refs/main names the snapshot holding config.json."""
    folder = root / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123abcd")
    (folder / "snapshots" / "0123abcd").mkdir(parents=True)
    (folder / "snapshots" / "0123abcd" / "config.json").write_text(json.dumps(config))
    return folder / "snapshots" / "0123abcd" / "config.json"


def test_config_read_from_a_local_folder_and_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import try_to_load_from_cache

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    folder = tmp_path / "my model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN2_TINY))
    assert read_model_config(str(folder)) == ModelConfig(QWEN2_TINY, str(folder / "config.json"))
    cached = fake_hub_cache(tmp_path / "hub", "org/tiny-qwen", QWEN2_TINY)
    assert read_model_config("org/tiny-qwen") == ModelConfig(QWEN2_TINY, str(cached))
    # The very file huggingface_hub's own lookup finds.
    found = try_to_load_from_cache("org/tiny-qwen", "config.json", cache_dir=tmp_path / "hub")
    assert Path(str(found)) == cached == cached_config_file("org/tiny-qwen")
    missing = read_model_config("org/other")
    assert missing.config is None
    assert missing.source == (
        f"no config.json for org/other in the hub cache ({tmp_path / 'hub'}); "
        "`hf download org/other config.json` puts it there"
    )
    assert read_model_config(str(tmp_path)).source == f"no config.json in the folder {tmp_path}"
    # The plan's view of the file system decides: nothing is read where nothing "exists".
    assert read_model_config("org/tiny-qwen", exists=lambda path: False).config is None


@pytest.mark.process
def test_hub_cache_folder_follows_huggingface_hubs_precedence(tmp_path: Path) -> None:
    """The same folder as huggingface_hub's constants, for each way of setting it."""
    code = (
        "from huggingface_hub import constants; from launcher.plan.model_config import hub_cache; "
        "print(constants.HF_HUB_CACHE); print(hub_cache())"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    base.pop("XDG_CACHE_HOME", None)
    for extra in (
        {},
        {"XDG_CACHE_HOME": str(tmp_path / "xdg")},
        {"HF_HOME": str(tmp_path / "home")},
        {"HF_HOME": str(tmp_path / "home"), "HUGGINGFACE_HUB_CACHE": str(tmp_path / "old")},
        {"HUGGINGFACE_HUB_CACHE": str(tmp_path / "old"), "HF_HUB_CACHE": str(tmp_path / "new")},
    ):
        out = subprocess.run(
            [sys.executable, "-c", code], env={**base, **extra}, cwd=REPO,
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert Path(out[0]) == Path(out[1]), extra


SFT_RECIPE = """\
name: any-decoder
task: sft
model: {model}
tokenizer:
  train: {{algorithm: byte_level_bpe, vocab_size: 1000, special_tokens: ["<unk>", "<s>", "</s>"]}}
data: {{dataset: org/corpus, max_length: 64}}
training: {{max_steps: 10, per_device_batch_size: 2}}
"""


def plan_of(tmp_path: Path, model: str, *overrides: str, smoke: bool = False) -> Any:
    from launcher.plan.build import build_plan
    from launcher.recipe.loader import load_recipe

    path = tmp_path / "recipe.yaml"
    path.write_text(SFT_RECIPE.format(model=model))
    recipe = load_recipe(path, list(overrides))
    return build_plan(recipe, tmp_path / "run", smoke=smoke, python="python")


def test_plan_counts_a_qwen2_built_from_config(tmp_path: Path) -> None:
    sizes = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 3,
             "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    plan = plan_of(tmp_path, json.dumps({"architecture": "qwen2", "config": sizes}))
    # The ranks' model: the recipe's fields over transformers' defaults, the tokenizer's vocab.
    model = real_model("qwen2", {**sizes, "vocab_size": 1000}, "sft")
    assert plan.parameters.total == sum(p.numel() for p in model.parameters())
    assert f"qwen2 built from config, {plan.parameters.total:,} parameters" in plan.summary()
    assert plan.memory is not None
    # --smoke shrinks it by qwen2's own size fields, and still counts it.
    smoke = plan_of(tmp_path, json.dumps({"architecture": "qwen2", "config": sizes}), smoke=True)
    assert smoke.recipe.model.config == {**sizes, **tiny_config("qwen2")}
    assert smoke.smoke_notes[0].startswith("model: tiny qwen2 built from config (hidden_size=64,")
    assert smoke.parameters is not None and smoke.parameters.total < 200_000


def test_plan_counts_a_hub_model_from_the_cache_or_says_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    fake_hub_cache(tmp_path / "hub", "org/tiny-qwen", QWEN2_TINY)
    plan = plan_of(tmp_path, "{pretrained: org/tiny-qwen}", "tokenizer.train=null")  # its own
    fields = {k: v for k, v in QWEN2_TINY.items() if k not in ("model_type", "architectures")}
    model = real_model("qwen2", fields, "sft")
    assert plan.parameters.total == sum(p.numel() for p in model.parameters())
    assert f"org/tiny-qwen, {plan.parameters.total:,} parameters" in plan.summary()
    # --smoke builds the cached model's own model_type, tiny.
    smoke = plan_of(tmp_path, "{pretrained: org/tiny-qwen}", smoke=True)
    assert smoke.recipe.model.architecture == "qwen2"

    unknown = plan_of(tmp_path, "{pretrained: org/not-here}")
    assert unknown.parameters is None and unknown.memory is None
    assert (
        "org/not-here (parameters unknown: no config.json for org/not-here in the hub cache ("
        in unknown.summary()
    )
    # A family without a formula: unknown, and why.
    fake_hub_cache(tmp_path / "hub", "org/tiny-mixtral", {**QWEN2_TINY, "model_type": "mixtral"})
    mixtral = plan_of(tmp_path, "{pretrained: org/tiny-mixtral}")
    assert mixtral.parameters is None
    assert "(parameters unknown: no parameter formula for mixtral (the plan counts:" in (
        mixtral.summary()
    )


def test_lora_on_a_qwen2_is_planned(tmp_path: Path) -> None:
    sizes = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    model = {"architecture": "qwen2", "config": sizes, "lora": {"r": 4}}
    plan = plan_of(tmp_path, json.dumps(model))
    assert plan.adapters is not None
    # r x (in + out) for q, k, v, o, gate, up, down, over 2 layers.
    per_layer = 4 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 2 * (64 + 96) + (96 + 64))
    assert plan.adapters.adapters == 2 * per_layer


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("qwen-2", "did you mean `qwen2`?"),
        ("Gemma", "did you mean `gemma`?"),
        ("mistrall", "did you mean `mistral`?"),
        ("no-such-thing", "'no-such-thing' is not a decoder model_type of transformers"),
    ],
)
def test_unknown_architecture_is_a_recipe_error(tmp_path: Path, name: str, says: str) -> None:
    from launcher.errors import RecipeError

    with pytest.raises(RecipeError) as raised:
        plan_of(tmp_path, json.dumps({"architecture": name}))
    (problem,) = raised.value.problems
    assert problem.key == "model.architecture" and says in problem.message, problem


@pytest.mark.process
def test_plan_of_any_decoder_imports_neither_torch_nor_transformers(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(SFT_RECIPE.format(model="{architecture: gpt2}"))
    code = (
        "import sys; from pathlib import Path; from launcher.plan.build import build_plan; "
        "from launcher.recipe.loader import load_recipe; "
        f"plan = build_plan(load_recipe(Path({str(tmp_path / 'r.yaml')!r})), Path('/runs/x')); "
        "assert plan.parameters is not None; "
        "heavy = {'torch', 'transformers', 'huggingface_hub'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
