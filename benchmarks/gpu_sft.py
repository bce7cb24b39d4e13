"""SFT throughput and MFU on one GPU, through the launcher's own path (``launcher run``).

    python benchmarks/gpu_sft.py            # one GPU: ~0.9B Mistral, bf16, packing, seq 2048,
                                            # DDP / ZeRO-2 / ZeRO-3 x fused AdamW / paged AdamW
                                            # 32-bit / 8-bit AdamW, and QLoRA (DDP, paged AdamW)
    python benchmarks/gpu_sft.py --tiny     # CPU smoke test of this script: tiny model, 2 settings
                                            # (the QLoRA row is skipped without CUDA)

The model is recipes/sft-mistral.yaml's architecture scaled to about 1B parameters (hidden 2048,
16 layers, 16 heads, 8 KV heads, intermediate 5632, vocabulary 32000: N = 0.89B), built from
config in bf16, packed rows of 2048 tokens, SDPA attention (``flash_attention_2`` when flash-attn
is installed).
Each setting is one ``launcher run`` of that recipe with overrides, so the numbers are those of
the path users run. The QLoRA row trains LoRA adapters (r=16, alpha 32, dropout 0.05, every linear
layer but the head) on the same model's weights frozen in 4-bit NF4 with double quantization
(``model.lora``, ``model.quantization=4bit``: bitsandbytes, computing in bf16), under DDP with
paged 32-bit AdamW as in the QLoRA paper; the rank builds the base model from config once and
loads it quantized. It is measured on CUDA only: elsewhere (``--tiny`` on CPU) it is skipped, with
a line that says so. The data is generated text (the GPU machines are offline) and the tokenizer a
byte-level BPE trained on it once by ``launcher tokenizer``; prepared data is cached across
settings, which changes start-up time only.

Measured per setting, over the steps after the first fifth (at least 2 skipped):
- tokens/s: every token of the packed rows, from the rank's ``metrics.jsonl`` throughput;
- MFU = (6 N + 12 L H S) x tokens/s / peak, PaLM's formula (Chowdhery et al. 2022, app. B): N the
  parameters that multiply (all but the input embedding table), L layers, H hidden size, S the
  sequence length; attention counted over the whole row, as if packed documents attended across
  each other (they do not: the real attention work is smaller, so this MFU errs high by that
  much); peak is the GPU's dense bf16 peak (H100 SXM: 989 TFLOP/s) from a table by name. For
  QLoRA, 4 N + 6 A + 12 L H S: frozen weights get no weight gradient (forward and input gradient
  only), the A adapter parameters get all three; dequantizing the 4-bit weights is overhead, not
  model FLOPs, so it lowers the MFU;
- peak memory: ``max_memory_allocated`` from the ranks' metrics when they record it, else the
  peak of ``nvidia-smi``'s used memory (CUDA context and allocator cache included); on CPU the
  largest process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

from common import REPO, command_line, console_script, machine_line, markdown_table

RECIPE = REPO / "recipes" / "sft-mistral.yaml"
FLOPS_FORMULA = "MFU = (6*N + 12*L*H*S) * tokens/s / peak (PaLM, app. B; N without input embedding)"

MODEL_1B = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
}
MODEL_TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
STRATEGIES = {
    "ddp": ["distributed.strategy=ddp"],
    "zero2": ["distributed.strategy=deepspeed", "distributed.zero_stage=2"],
    "zero3": ["distributed.strategy=deepspeed", "distributed.zero_stage=3"],
}
# AdamW as torch's fused kernel (the fastest torch AdamW on a GPU), bitsandbytes' paged 32-bit and
# 8-bit AdamW.
OPTIMIZERS = ("adamw_torch_fused", "paged_adamw_32bit", "adamw_8bit")
# What trains: every weight, or LoRA adapters on 4-bit NF4 weights (QLoRA), as recipe overrides.
LORA_R = 16
WEIGHTS = {
    "full": [],
    "qlora": [
        f"model.lora={{r: {LORA_R}, alpha: 32, dropout: 0.05, target_modules: all-linear}}",
        "model.quantization=4bit",
    ],
}
WEIGHTS_LABEL = {"full": "full", "qlora": f"QLoRA (NF4, r={LORA_R})"}


class Setting(NamedTuple):
    """One row: ``STRATEGY:OPTIMIZER[:WEIGHTS]`` on the command line."""

    strategy: str
    optimizer: str
    weights: str = "full"

    @property
    def name(self) -> str:  # the run's folder
        suffix = "" if self.weights == "full" else f"-{self.weights}"
        return f"{self.strategy}-{self.optimizer}{suffix}"


QLORA_SETTING = Setting("ddp", "paged_adamw_32bit", "qlora")
TINY_SETTINGS = (Setting("ddp", "adamw_torch"), Setting("zero2", "adamw_8bit"), QLORA_SETTING)
# bitsandbytes runs 4-bit layers on CPU too (tests/e2e/test_lora.py trains QLoRA there), but slowly,
# and that figure would say nothing about a GPU.
NEEDS_CUDA = {"qlora": "a GPU measurement (4-bit on CPU is slow and says nothing about a GPU)"}
# Dense bf16 peak FLOP/s by GPU name (first match wins; vendor data sheets, no sparsity).
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM / HBM3
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)


@dataclass(frozen=True)
class Size:
    """What one benchmark size trains: model, sequence, batch, steps, vocabulary."""

    model: dict[str, int]
    seq: int
    batch: int
    steps: int
    vocab: int
    precision: str


def corpus(path: Path, tokens: int, seed: int = 0) -> None:
    """Write generated documents with about ``tokens`` tokens' worth of text (offline machines
    have no dataset): Zipf-distributed pseudo-words, so that a 32000-token BPE fills up."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + ["th", "sh", "qu"]
    words = sorted(
        {"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(60000)}
    )
    rng.shuffle(words)
    weights = [1 / (rank + 1) for rank in range(len(words))]
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < tokens * 7:  # about 7 characters per token of this text (32000 BPE)
            text = " ".join(rng.choices(words, weights, k=rng.randint(40, 600)))
            out.write(json.dumps({"text": text}) + "\n")
            written += len(text)


def train_tokenizer(work: Path, data: Path, vocab: int, env: dict[str, str]) -> Path:
    folder = work / "tokenizer"
    result = subprocess.run(
        [
            *console_script("launcher"),
            "tokenizer",
            str(RECIPE),
            *data_overrides(data),
            "tokenizer.pretrained=null",
            f"tokenizer.train={{algorithm: byte_level_bpe, vocab_size: {vocab}, "
            "special_tokens: ['<unk>', '<s>', '</s>']}",
            "-o",
            str(folder),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"launcher tokenizer failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return folder


def tokenizer_size(folder: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(True)


def data_overrides(data: Path) -> list[str]:
    return ["data.dataset=null", f"data.files={{train: {data}}}"]


def attention(gpu: bool) -> str:
    return "flash_attention_2" if gpu and find_spec("flash_attn") else "sdpa"


def run_overrides(size: Size, setting: Setting, tokenizer: Path, data: Path,
                  gpu: bool) -> list[str]:  # fmt: skip
    model = {**size.model, "max_position_embeddings": max(size.seq, 4096)}
    return [
        *(f"model.config.{key}={value}" for key, value in model.items()),
        f"model.attn_implementation={attention(gpu)}",
        f"tokenizer.pretrained={tokenizer}",
        *data_overrides(data),
        f"data.max_length={size.seq}",
        "data.packing=true",
        f"training.max_steps={size.steps}",
        f"training.per_device_batch_size={size.batch}",
        "training.gradient_accumulation_steps=1",
        "training.logging_steps=1",
        "training.warmup_steps=1",
        f"training.precision={size.precision}",
        f"training.optimizer={setting.optimizer}",
        "checkpointing.strategy='no'",  # quoted: a bare `no` is YAML 1.1's false
        "distributed.processes_per_node=1",
        *STRATEGIES[setting.strategy],
        *WEIGHTS[setting.weights],
    ]


def parse_settings(text: str) -> list[Setting]:
    """``ddp:adamw_torch_fused,ddp:paged_adamw_32bit:qlora`` as settings; every malformed item
    is named at once, with the allowed values."""
    settings, problems = [], []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not all(parts):
            problems.append(f"{item!r}: expected STRATEGY:OPTIMIZER or STRATEGY:OPTIMIZER:WEIGHTS")
            continue
        setting = Setting(*parts)
        if setting.strategy not in STRATEGIES:
            problems.append(f"{item!r}: strategy {setting.strategy!r} is not one of "
                            f"{', '.join(STRATEGIES)}")  # fmt: skip
        if setting.weights not in WEIGHTS:
            problems.append(f"{item!r}: weights {setting.weights!r} is not one of "
                            f"{', '.join(WEIGHTS)}")  # fmt: skip
        settings.append(setting)
    if problems:
        raise ValueError("--settings: " + "; ".join(problems))
    return settings


def default_settings(tiny: bool) -> list[Setting]:
    if tiny:
        return list(TINY_SETTINGS)
    return [Setting(s, o) for s in STRATEGIES for o in OPTIMIZERS] + [QLORA_SETTING]


def split_runnable(settings: list[Setting], cuda: bool) -> tuple[list[Setting], list[str]]:
    """The settings this machine can run, and a line for each one it skips (and why)."""
    runnable, skipped = [], []
    for setting in settings:
        reason = NEEDS_CUDA.get(setting.weights)
        if reason and not cuda:
            skipped.append(
                f"skipped {setting.strategy} {setting.optimizer} {WEIGHTS_LABEL[setting.weights]}: "
                f"{reason}; this machine has no CUDA GPU (nvidia-smi found none)"
            )
        else:
            runnable.append(setting)
    return runnable, skipped


class GpuMemoryPoll:
    """Peak of ``nvidia-smi``'s used memory on GPU 0 while a run lasts (MiB)."""

    def __init__(self) -> None:
        self.peak_mib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def poll(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i=0"]
        while not self.stop.wait(0.5):
            try:
                used = int(subprocess.run(query, capture_output=True, text=True).stdout.split()[0])
            except (OSError, ValueError, IndexError):
                return
            self.peak_mib = max(self.peak_mib, used)

    def __enter__(self) -> GpuMemoryPoll:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# Runs `launcher run` and writes the peak resident memory of its largest process (KiB): the
# kernel folds each waited-for descendant's peak into RUSAGE_CHILDREN.
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


@dataclass(frozen=True)
class Result:
    setting: Setting
    tokens_per_second: float
    steps_timed: int
    first_step_s: float
    total_s: float
    peak_memory: str


def run_setting(setting: Setting, overrides: list[str], work: Path, env: dict[str, str],
                gpu: bool) -> Result:  # fmt: skip
    name = setting.name
    run_dir = work / name
    rss_file = work / f"{name}.maxrss"
    argv = [*console_script("launcher"), "run", str(RECIPE), *overrides, "--run-dir", str(run_dir)]
    log = work / f"{name}.log"
    poll = GpuMemoryPoll() if gpu else None
    started, clock = time.time(), time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        if poll:
            with poll:
                code = subprocess.call(
                    argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
                )
        else:
            wrapped = [sys.executable, "-c", PEAK_RSS_WRAPPER, str(rss_file), *argv]
            code = subprocess.call(wrapped, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    total = time.perf_counter() - clock
    if code != 0:
        raise SystemExit(f"{name} failed ({code}); its output:\n{log.read_text()[-4000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    skip = max(2, len(steps) // 5)
    timed = [r for r in steps[skip:] if r.get("tokens_per_second") and r.get("interval_seconds")]
    if not timed:
        raise SystemExit(f"{name}: no timed steps in {run_dir / 'metrics.jsonl'}")
    tokens = sum(r["tokens_per_second"] * r["interval_seconds"] for r in timed)
    seconds = sum(r["interval_seconds"] for r in timed)
    allocated = [r["max_memory_allocated"] for r in records if "max_memory_allocated" in r]
    if allocated:
        memory = f"{max(allocated) / 2**30:.1f} GiB allocated"
    elif poll:
        memory = f"{poll.peak_mib / 1024:.1f} GiB nvidia-smi"
    else:
        memory = f"{int(rss_file.read_text()) / 2**20:.2f} GiB RSS"
    return Result(
        setting=setting,
        tokens_per_second=tokens / seconds,
        steps_timed=len(timed),
        first_step_s=steps[0]["time"] - started,
        total_s=total,
        peak_memory=memory,
    )


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i=0"]
    result = subprocess.run(query, capture_output=True, text=True)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def peak_flops(name: str | None, given: float | None) -> float | None:
    if given:
        return given * 1e12
    if name is None:
        return None
    return next((peak for key, peak in PEAK_BF16 if key in name), None)


def flops_per_token(model: dict[str, int], vocab: int, seq: int) -> tuple[int, int, int]:
    """(N, N that multiplies, FLOPs per token) of the Mistral the launcher builds."""
    sys.path.insert(0, str(REPO))
    from launcher.plan.parameters import count_parameters

    total = count_parameters("mistral", {**model, "vocab_size": vocab}, "sft").total
    matmul = total - vocab * model["hidden_size"]  # the input embedding is a lookup
    layers, hidden = model["num_hidden_layers"], model["hidden_size"]
    return total, matmul, 6 * matmul + 12 * layers * hidden * seq


def adapter_parameters(model: dict[str, int], vocab: int) -> int:
    """A: the parameters of the QLoRA row's adapters (r x (inputs + outputs) per linear layer),
    counted as the plan counts them."""
    sys.path.insert(0, str(REPO))
    from launcher.plan.adapters import count_adapters

    return count_adapters("mistral", model, "sft", 0, LORA_R, "all-linear", 0).adapters


def flops_per_token_of(setting: Setting, model: dict[str, int], vocab: int, seq: int) -> int:
    """Model FLOPs per token of one row: 6 N + 12 L H S, or for QLoRA 4 N + 6 A + 12 L H S."""
    _, matmul, full = flops_per_token(model, vocab, seq)
    if setting.weights == "full":
        return full
    return full - 2 * matmul + 6 * adapter_parameters(model, vocab)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke test: tiny, 2 settings (+ QLoRA on CUDA)"
    )
    parser.add_argument("--steps", type=int, help="optimizer steps per setting")
    parser.add_argument("--batch", type=int, help="micro batch (rows of --seq tokens)")
    parser.add_argument("--seq", type=int, help="tokens per packed row")
    parser.add_argument(
        "--settings",
        help="comma-separated STRATEGY:OPTIMIZER[:WEIGHTS], WEIGHTS full (default) or qlora "
        "(default: all, or 3 with --tiny)",
    )
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak, if not in the table")
    parser.add_argument("--keep", type=Path, help="keep runs in this folder (new or empty)")
    args = parser.parse_args(argv)

    name = gpu_name()
    gpu = name is not None and not args.tiny
    if not gpu and not args.tiny:
        raise SystemExit("no GPU found (nvidia-smi); run with --tiny for the CPU smoke test")
    size = (
        Size(MODEL_TINY, seq=128, batch=2, steps=6, vocab=512, precision="fp32")
        if args.tiny
        else Size(MODEL_1B, seq=2048, batch=8, steps=40, vocab=32000, precision="bf16")
    )
    size = Size(
        size.model,
        seq=args.seq or size.seq,
        batch=args.batch or size.batch,
        steps=args.steps or size.steps,
        vocab=size.vocab,
        precision=size.precision,
    )
    try:
        chosen = parse_settings(args.settings) if args.settings else default_settings(args.tiny)
    except ValueError as error:
        parser.error(str(error))
    settings, skipped = split_runnable(chosen, cuda=name is not None)
    for line in skipped:
        print(line, flush=True)
    if not settings:
        print("nothing left to run")
        return 0

    work = args.keep or Path(tempfile.mkdtemp(prefix="launcher-gpu-sft-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "LAUNCHER_CACHE": str(work / "cache"),
        "HF_DATASETS_CACHE": str(work / "datasets-cache"),
    }
    try:
        data = work / "corpus.jsonl"
        corpus(data, tokens=int(size.steps * size.batch * size.seq * 1.3) + 20000)
        tokenizer = train_tokenizer(work, data, size.vocab, env)
        vocab = tokenizer_size(tokenizer)
        total, matmul, per_token = flops_per_token(size.model, vocab, size.seq)
        peak = peak_flops(name, args.peak_tflops) if gpu else None
        results = []
        for setting in settings:
            overrides = run_overrides(size, setting, tokenizer, data, gpu)
            results.append(run_setting(setting, overrides, work, env, gpu))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"# SFT throughput through `launcher run` ({'tiny, CPU' if args.tiny else name})\n")
    print(machine_line())
    print(f"command: {command_line()}\n")
    model = ", ".join(f"{k.removeprefix('num_')}={v}" for k, v in size.model.items())
    print(
        f"model: mistral {model}, vocab {vocab}; N = {total:,} parameters "
        f"({matmul:,} without the input embedding)"
    )
    print(
        f"rows: {size.batch} x {size.seq} tokens, packed, {size.precision}, attention "
        f"{attention(gpu)}; {size.steps} steps per setting"
    )
    print(f"{FLOPS_FORMULA}: {per_token / 1e9:.3f} GFLOP/token, peak "
          f"{f'{peak / 1e12:.0f} TFLOP/s' if peak else 'n/a'}")  # fmt: skip
    if any(result.setting.weights == "qlora" for result in results):
        qlora = flops_per_token_of(QLORA_SETTING, size.model, vocab, size.seq)
        adapters = adapter_parameters(size.model, vocab)
        print(f"QLoRA rows: MFU = (4*N + 6*A + 12*L*H*S) * tokens/s / peak, A = {adapters:,} "
              f"adapter parameters: {qlora / 1e9:.3f} GFLOP/token")  # fmt: skip
    print()
    rows = []
    for result in results:
        setting = result.setting
        flops = flops_per_token_of(setting, size.model, vocab, size.seq)
        mfu = flops * result.tokens_per_second / peak if peak else None
        rows.append(
            (
                setting.strategy,
                setting.optimizer,
                WEIGHTS_LABEL[setting.weights],
                f"{result.tokens_per_second:,.0f}",
                "n/a" if mfu is None else f"{mfu:.3f}",
                result.peak_memory,
                str(result.steps_timed),
                f"{result.first_step_s:.1f}",
                f"{result.total_s:.1f}",
            )
        )
    headers = (
        "strategy",
        "optimizer",
        "weights",
        "tokens/s",
        "MFU",
        "peak memory",
        "steps timed",
        "to first step s",
        "total s",
    )
    print(markdown_table(headers, rows))
    for line in skipped:
        print(line)
    full = [r for r in results if r.setting.weights == "full"]
    if peak and full:  # the bar is full fine-tuning's
        best = max(full, key=lambda r: r.tokens_per_second)
        best_mfu = per_token * best.tokens_per_second / peak
        verdict = "yes" if best_mfu >= 0.40 else "NO"
        print(f"\nbar: best MFU {best_mfu:.3f} ({best.setting.name}) >= 0.40: {verdict}")
    elif not peak:
        print("\nMFU: n/a (no GPU peak: CPU run or unknown GPU; see --peak-tflops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
