"""LoRA and QLoRA end to end: real peft adapters, real bitsandbytes 4-bit layers (they run on CPU,
slowly), real ranks and DeepSpeed engines, on the SFT smoke recipe.

- QLoRA on one rank: trains, is continued from a checkpoint as if killed and ends with the very
  same adapter, exports as a PEFT adapter and as one merged model (logits checked), and predicts.
- LoRA under DeepSpeed ZeRO-2 and ZeRO-3 on two ranks, on conversations with the loss on the
  assistant's answers: the adapter is exported from the fp32 master weights in the shards.


Training runs as users run it (``launcher run``, a process); export and predict run in process
(``launcher.cli.main``), where torch is imported already.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import launcher

from launcher.cli import main

pytestmark = pytest.mark.integration

LORA = [
    "model.lora={r: 8, alpha: 16, dropout: 0.0}",
    "smoke.max_steps=4",
    "smoke.checkpoint_every=2",
]

LIBRARY_NOISE = (
    "Failed to load CPU gemm_4bit_forward",
    "Setting accelerator to CPU",
    "shm_comm_op built successfully",
    "Setting OMP_NUM_THREADS",
)


def run_lora(workdir: Path, *overrides: str) -> tuple[Path, list[str]]:
    run_dir = workdir / "run"
    command = ["run", "sft-mistral", "--smoke", "--run-dir", str(run_dir), *LORA, *overrides]
    out = launcher(*command, cwd=workdir)
    assert "finished in" in out.stdout, out.stdout[-2000:]
    # The libraries' machine noise stays out of the terminal (bitsandbytes' optional kernel on
    # AVX512-BF16 CPUs, DeepSpeed finding no GPU, its shared-memory op, torchrun's banner).
    for noise in LIBRARY_NOISE:
        assert noise not in out.stdout + out.stderr, noise
    return run_dir, command


def adapter_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def cli(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """``launcher ARGV`` in process; what it printed."""
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_qlora_one_rank_resumes_exactly_exports_merges_and_predicts(
    workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir, command = run_lora(workdir, "model.quantization=4bit")
    log = (run_dir / "logs" / "rank-0.log").read_text()
    assert "adapters: 16,384 trainable parameters of" in log
    model_dir = run_dir / "model"
    config = json.loads((model_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(run_dir / "base-model")
    assert (config["r"], config["lora_alpha"], config["task_type"]) == (8, 16, "CAUSAL_LM")
    trained = adapter_weights(model_dir)
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in
               trained.items())  # fmt: skip  # lora_B starts at zero: it trained

    # Killed after the checkpoint at step 2: the same command continues and ends identically.
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-4")
    shutil.rmtree(model_dir)
    (run_dir / "result.json").unlink()
    out = launcher(*command, cwd=workdir)
    assert "continuing run" in out.stdout
    resumed = adapter_weights(model_dir)
    assert resumed.keys() == trained.keys()
    for name in trained:
        assert torch.equal(resumed[name], trained[name]), name

    # The adapter alone, in PEFT format: PeftModel loads it onto the base.
    adapter = workdir / "adapter"
    out = cli(capsys, "export", str(run_dir), "-o", str(adapter))
    assert "adapter: 28 tensors, 16,384 parameters, each equal to the checkpoint's" in out
    exported = adapter_weights(adapter)
    assert all(torch.equal(exported[name], trained[name]) for name in trained)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(run_dir / "base-model")
    with_adapter = PeftModel.from_pretrained(base, str(adapter)).eval()

    # Merged: one model whose logits equal base + adapter (fp32, tolerance stated in the export).
    merged_dir = workdir / "merged"
    out = cli(capsys, "export", str(run_dir), "--merge", "-o", str(merged_dir))
    assert "merged model:" in out and "of base+adapter" in out
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    sample = torch.randint(
        0, base.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(1)
    )
    with torch.inference_mode():
        expected, got = with_adapter(input_ids=sample).logits, merged(input_ids=sample).logits
    assert (expected - got).abs().max().item() < 1e-4
    assert not any("lora" in name for name, _ in merged.named_parameters())

    # Predict with the run (base + adapter) and with the merged folder: the same continuation.
    prompts = workdir / "prompts.txt"
    prompts.write_text("The old man\n")
    answers = []
    for source in (run_dir, merged_dir):
        out = cli(capsys, "predict", str(source), "--input", str(prompts), "--max-new-tokens", "4")
        answers.append(json.loads(out)["generated"])
    assert answers[0] == answers[1]


@pytest.mark.parametrize("stage", [2, 3])
def test_lora_under_deepspeed_zero_on_two_ranks(
    stage: int, workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    """LoRA under ZeRO-2 and ZeRO-3 on two ranks, on conversations with the loss on the
    assistant turns (chat SFT with LoRA); the adapter exported from the shards' fp32 masters.
    ZeRO-3 partitions parameters as the model is built, a collective of every rank: the frozen
    base must be built and saved by rank 0 alone with that off (it hung), then loaded by all.
    (QLoRA under ZeRO-2 ran by hand; QLoRA under ZeRO-3 needs GPUs.)"""
    run_dir, _ = run_lora(
        workdir,
        "distributed.strategy=deepspeed",
        f"distributed.zero_stage={stage}",
        "distributed.processes_per_node=2",
        "data.loss_on=assistant",  # chat SFT: conversations, the loss on the answers only
    )
    for rank in (0, 1):
        log = (run_dir / "logs" / f"rank-{rank}.log").read_text()
        assert "world 2, global batch" in log
    rank0 = (run_dir / "logs" / "rank-0.log").read_text()
    assert "adapters: 16,384 trainable parameters" in rank0
    # The second stage finds the conversations the first prepared in the shared data cache.
    assert re.search(r"data: (prepared|cache hit) sft-\w+ .*: train \d+ rows", rank0)
    assert "loss on the assistant turns only" in (run_dir / "plan" / "summary.txt").read_text()
    adapter = workdir / "adapter"
    out = cli(capsys, "export", str(run_dir), "-o", str(adapter))
    assert "DeepSpeed fp32 master weights of global_step4" in out
    # fp32 training on CPU: the adapter the Trainer saved equals the fp32 masters.
    final = adapter_weights(run_dir / "model")
    exported = adapter_weights(adapter)
    assert exported.keys() == final.keys()
    for name in final:
        assert torch.equal(exported[name], final[name]), name
