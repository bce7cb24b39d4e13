"""gpu_sft.py's CPU side, in process and in seconds: what can break before a GPU is reached.

The GPU rows cannot run here (test_benchmarks.py trains the ``--tiny`` rows through ``launcher
run`` on CPU). These tests cover the rest of the QLoRA row: ``--settings`` parsing, the overrides
that make it (they must resolve into a plan with 4-bit LoRA adapters), its FLOP count, and the skip
on a machine without CUDA.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import yaml

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def gpu_sft(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_sft

    return gpu_sft


def test_settings_parse_and_the_default_rows(gpu_sft: ModuleType) -> None:
    Setting = gpu_sft.Setting
    assert gpu_sft.parse_settings("ddp:adamw_torch_fused, ddp:paged_adamw_32bit:qlora") == [
        Setting("ddp", "adamw_torch_fused", "full"),
        Setting("ddp", "paged_adamw_32bit", "qlora"),
    ]
    defaults = gpu_sft.default_settings(tiny=False)
    assert len(defaults) == 3 * 3 + 1  # 3 strategies x 3 optimizers, and QLoRA
    assert [s for s in defaults if s.weights != "full"] == [gpu_sft.QLORA_SETTING]
    assert gpu_sft.QLORA_SETTING.name == "ddp-paged_adamw_32bit-qlora"
    assert Setting("zero2", "adamw_8bit").name == "zero2-adamw_8bit"  # full rows: as before
    with pytest.raises(ValueError) as error:
        gpu_sft.parse_settings("ddp:adamw_torch:lora,fsdp:adamw_torch,ddp")
    message = str(error.value)  # every bad item at once, with what is allowed
    assert "weights 'lora' is not one of full, qlora" in message
    assert "strategy 'fsdp' is not one of ddp, zero2, zero3" in message
    assert "'ddp': expected STRATEGY:OPTIMIZER" in message


def test_qlora_row_resolves_into_a_4bit_lora_plan(
    gpu_sft: ModuleType,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from launcher.cli import main as launcher

    size = gpu_sft.Size(gpu_sft.MODEL_1B, seq=2048, batch=8, steps=40, vocab=32000,
                        precision="bf16")  # fmt: skip
    data = tmp_path / "corpus.jsonl"
    data.write_text('{"text": "a b c"}\n')
    overrides = gpu_sft.run_overrides(size, gpu_sft.QLORA_SETTING, tmp_path / "tok", data, True)
    plan = tmp_path / "plan"
    capsys.readouterr()
    assert launcher(["plan", str(gpu_sft.RECIPE), *overrides, "-o", str(plan)]) == 0
    out = capsys.readouterr().out
    recipe = yaml.safe_load((plan / "recipe.yaml").read_text())
    assert recipe["model"]["quantization"] == "4bit"
    assert recipe["model"]["lora"] == {
        "r": 16,
        "alpha": 32.0,
        "dropout": 0.05,
        "target_modules": "all-linear",
    }
    assert recipe["model"]["config"]["hidden_size"] == 2048
    args = json.loads((plan / "trainer_args.json").read_text())
    assert (args["optim"], args["bf16"], args["max_steps"]) == ("paged_adamw_32bit", True, 40)
    assert args["deepspeed"] is None  # DDP
    # The adapters the QLoRA MFU counts are the ones the plan counts.
    adapters = gpu_sft.adapter_parameters(gpu_sft.MODEL_1B, 32000)
    assert f"trainable {adapters:,} (" in out and "(linear layers in 4-bit NF4)" in out


def test_qlora_flops_count_no_weight_gradients_of_frozen_weights(gpu_sft: ModuleType) -> None:
    model, vocab, seq = gpu_sft.MODEL_1B, 32000, 2048
    h, i, layers = model["hidden_size"], model["intermediate_size"], model["num_hidden_layers"]
    kv = model["num_key_value_heads"] * h // model["num_attention_heads"]
    # r x (inputs + outputs) for q, k, v, o, gate, up, down in every layer.
    per_layer = (h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h)
    adapters = 16 * per_layer * layers
    assert gpu_sft.adapter_parameters(model, vocab) == adapters
    _, matmul, full = gpu_sft.flops_per_token(model, vocab, seq)
    attention = 12 * layers * h * seq
    assert full == 6 * matmul + attention
    qlora = gpu_sft.flops_per_token_of(gpu_sft.QLORA_SETTING, model, vocab, seq)
    assert qlora == 4 * matmul + 6 * adapters + attention
    assert (
        gpu_sft.flops_per_token_of(gpu_sft.Setting("ddp", "adamw_8bit"), model, vocab, seq) == full
    )


def test_qlora_row_is_skipped_without_cuda(
    gpu_sft: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_training(*args: object) -> None:
        raise AssertionError("a skipped row prepared a run")

    monkeypatch.setattr(gpu_sft, "gpu_name", lambda: None)
    monkeypatch.setattr(gpu_sft, "train_tokenizer", no_training)
    assert gpu_sft.main(["--tiny", "--settings", "ddp:paged_adamw_32bit:qlora"]) == 0
    out = capsys.readouterr().out
    assert "skipped ddp paged_adamw_32bit QLoRA (NF4, r=16): a GPU measurement" in out
    assert "this machine has no CUDA GPU (nvidia-smi found none)" in out
    assert "nothing left to run" in out
    # --tiny's own rows: the QLoRA one is among them, and a CUDA machine keeps it.
    tiny = gpu_sft.default_settings(tiny=True)
    runnable, skipped = gpu_sft.split_runnable(tiny, cuda=False)
    assert gpu_sft.QLORA_SETTING not in runnable and len(skipped) == 1
    assert gpu_sft.split_runnable(tiny, cuda=True) == (tiny, [])
    # Without --tiny a machine without a GPU is refused outright.
    with pytest.raises(SystemExit, match="no GPU found"):
        gpu_sft.main([])
