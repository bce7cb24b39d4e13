"""Useful tokens in SFT: the launcher's defaults (bfd packing) against TRL's SFTTrainer without
packing, on a corpus of many short and a few long samples.

    python benchmarks/sft_tokens.py           # full size: a few minutes on 2 CPU cores
    python benchmarks/sft_tokens.py --quick   # tiny sizes, seconds: proves it runs

Every side trains the same tiny Mistral (same initial weights, Mistral's MLP/hidden proportion,
SDPA attention, CPU, fp32) for the same number of optimizer steps with the recipe defaults' micro
batch (8) and ``max_length`` (512):

- baseline: TRL ``SFTTrainer`` given the raw text with ``packing=False`` (it tokenizes, truncates
  and pads each batch to its longest sample);
- TRL packing: the same packed rows as the launcher's, batched by TRL's padding-free collator,
  which flattens the rows into one sequence (the layout for flash attention's varlen kernel);
- launcher: what a rank builds (``prepare``, ``training_arguments``, ``build_trainer``): packed
  rows kept as rows, position ids reset per sample (``launcher.ranks.packed_rows``).

A wrapper around each trainer's collator counts the tokens of the samples that went in (real) and
of the batch the model is given (seen): ``real fraction`` is real / seen, ``real tokens/s`` is
real tokens over the wall time of ``trainer.train()``, and ``ratio`` compares it with the baseline
measured in the same run. Timings are medians of interleaved repeats, on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = [f"w{i}" for i in range(500)]


@dataclass
class Size:
    samples: int
    max_length: int
    batch: int
    steps: int
    repeats: int
    hidden: int


FULL = Size(samples=4000, max_length=512, batch=8, steps=12, repeats=3, hidden=128)
QUICK = Size(samples=96, max_length=64, batch=4, steps=2, repeats=1, hidden=32)


def skewed_lengths(count: int, max_length: int, seed: int = 0) -> list[int]:
    """Words per sample: nine in ten short (1/64 to 1/8 of max_length), one in ten long
    (half to 1.75x max_length, so some are cut), like instruction data with a few documents."""
    rng = random.Random(seed)
    lengths = []
    for _ in range(count):
        if rng.random() < 0.1:
            lengths.append(rng.randint(max_length // 2, max_length * 7 // 4))
        else:
            lengths.append(rng.randint(max(max_length // 64, 2), max_length // 8))
    return lengths


def write_corpus(folder: Path, size: Size) -> Path:
    rng = random.Random(1)
    path = folder / "train.jsonl"
    with open(path, "w") as out:
        for words in skewed_lengths(size.samples, size.max_length):
            out.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=words))}) + "\n")
    return path


def word_tokenizer(folder: Path) -> Any:
    """One token per word (plus BOS and EOS), so sample lengths are exactly the ones drawn."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3}
    vocab.update({word: i + 4 for i, word in enumerate(WORDS)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 2)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",  # pad_token: eos, as the shipped SFT recipe sets it
    )
    tokenizer.save_pretrained(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


def tiny_mistral(vocab_size: int, size: Size) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, MistralConfig

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=size.hidden,
        intermediate_size=size.hidden * 7 // 2,  # Mistral's proportions (7168 / 2048)
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max(2 * size.max_length, 128),
        pad_token_id=3,
        bos_token_id=2,
        eos_token_id=3,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


class CountingCollator:
    """The trainer's own collator, noting per batch the tokens of the samples that go in (real)
    and the tokens of the batch the model is given (seen). The data loader may collate a batch
    ahead that no step uses: only the first ``steps`` batches count."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.counts: list[tuple[int, int]] = []

    def __call__(self, examples: list[dict[str, Any]]) -> Any:
        batch = self.inner(examples)
        real = sum(len(example["input_ids"]) for example in examples)
        self.counts.append((real, batch["input_ids"].numel()))
        return batch


def train_once(name: str, build: Callable[[], Any], size: Size) -> dict[str, Any]:
    trainer = build()
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    used = counter.counts[: size.steps]
    assert len(used) == size.steps, f"{name}: {len(used)} batches for {size.steps} steps"
    real, seen = sum(r for r, _ in used), sum(s for _, s in used)
    return {"name": name, "seconds": seconds, "real": real, "seen": seen, "batches": len(used)}


BASELINE = "TRL SFTTrainer, packing=False (baseline)"
FLATTENED = "TRL packing: bfd rows flattened to one sequence"
LAUNCHER = "launcher defaults: bfd rows, position ids reset"


def measure(size: Size, work: Path) -> list[dict[str, Any]]:
    import datasets
    from trl import SFTConfig, SFTTrainer

    from launcher.ranks.data_cache import prepare
    from launcher.ranks.trainers import build_trainer, make_training_arguments, sft_arguments
    from launcher.recipe.schema import Recipe

    corpus = write_corpus(work, size)
    tokenizer_dir = work / "tokenizer"
    tokenizer = word_tokenizer(tokenizer_dir)
    recipe = Recipe.model_validate(
        {
            "name": "sft-tokens",
            "task": "sft",
            "data": {"files": {"train": str(corpus)}, "max_length": size.max_length},
            "training": {"per_device_batch_size": size.batch},
        }
    )
    ours = prepare(recipe, tokenizer, tokenizer_dir, log=lambda m: None, root=work / "cache")
    rows = ours.splits["train"]
    raw = datasets.Dataset.from_list([json.loads(line) for line in corpus.read_text().splitlines()])

    common = {
        "output_dir": str(work / "out"),
        "per_device_train_batch_size": recipe.training.per_device_batch_size,
        "max_steps": size.steps,
        "learning_rate": recipe.training.learning_rate,
        "max_length": recipe.data.max_length,
        "dataset_text_field": recipe.data.text_column,
        "save_strategy": "no",
        "logging_steps": 1000,
        "report_to": "none",
        "bf16": False,
        "seed": recipe.training.seed,
        "disable_tqdm": True,
    }

    def model() -> Any:
        return tiny_mistral(len(tokenizer), size)

    def baseline() -> Any:
        args = SFTConfig(**common, packing=False, use_cpu=True)
        return SFTTrainer(model(), args, train_dataset=raw, processing_class=tokenizer)

    def flattened() -> Any:
        args = SFTConfig(**sft_arguments({**common, "packing": True}), use_cpu=True)
        return SFTTrainer(model(), args, train_dataset=rows, processing_class=tokenizer)

    def launcher() -> Any:  # what a rank builds: training_arguments, then build_trainer
        args = make_training_arguments(recipe, {**common, "packing": recipe.data.packing}, True)
        return build_trainer(recipe, model(), tokenizer, args, {"train": rows}, [])

    sides = {BASELINE: baseline, FLATTENED: flattened, LAUNCHER: launcher}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(size.repeats):  # interleaved, so all sides share the machine's moods
        for name, build in sides.items():
            runs[name].append(train_once(name, build, size))
    results = []
    for name, measured in runs.items():
        first = measured[0]
        results.append(
            {
                "name": name,
                "batches": first["batches"],
                "real": first["real"],
                "seen": first["seen"],
                "fraction": first["real"] / first["seen"],
                "seconds": statistics.median(run["seconds"] for run in measured),
                "rate": statistics.median(run["real"] / run["seconds"] for run in measured),
            }
        )
    return results


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]["rate"]
    lines = [
        "| setup | batches | real tokens | tokens seen | real fraction | train s | real tokens/s "
        "| ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['batches']} | {r['real']:,} | {r['seen']:,} | "
            f"{r['fraction']:.3f} | {r['seconds']:.1f} | {r['rate']:,.0f} | "
            f"{r['rate'] / base:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    options = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    size = QUICK if options.quick else FULL
    lengths = skewed_lengths(size.samples, size.max_length)
    ordered = sorted(lengths)
    print(
        f"SFT tokens: {size.samples} samples of {ordered[len(ordered) // 2]} words (median), "
        f"{ordered[int(len(ordered) * 0.9)]} (p90), {ordered[-1]} (max); max_length "
        f"{size.max_length}, micro batch {size.batch}, {size.steps} steps, tiny Mistral "
        f"(hidden {size.hidden}, MLP {size.hidden * 7 // 2}, 2 layers, sdpa) on CPU, "
        f"1 thread, median of {size.repeats}\n"
    )
    import torch

    # One thread per side: on a shared machine two OpenMP threads made the same run's small
    # operations 15x slower from one repeat to the next; one thread keeps the ratio steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="sft-tokens-") as folder:
            results = measure(size, Path(folder))
    finally:
        torch.set_num_threads(threads)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
