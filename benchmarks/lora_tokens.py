"""Tokens/s of LoRA against full fine-tuning of the same tiny decoder on CPU, through the Trainer a
rank builds.

    python benchmarks/lora_tokens.py           # hidden 512, 4 layers, seq 256: 2-3 min on 2 cores
    python benchmarks/lora_tokens.py --quick   # tiny sizes, seconds: proves it runs

Every variant starts from the same saved base model (a Mistral built from config, seeded, saved
once by ``launcher.ranks.model.save_base_model``, as a LoRA run of a model built from config does)
and trains on the same packed rows (``launcher.ranks.data_cache.prepare``) with the plan's Trainer
arguments (``launcher.plan.trainer.trainer_arguments_json``), the model from ``build_model`` and
the trainer from ``build_trainer``, as ``launcher.ranks.entry`` does:

- full fine-tuning (the baseline): every weight trains (``model.pretrained`` = the base model);
- LoRA: the same recipe with ``model.lora`` (r=16, alpha 32, the default dropout 0.05,
  ``all-linear``): peft adapters on every linear layer but the output head, the base frozen;
- LoRA with dropout 0: the same, to show what the adapters' dropout costs.

What is measured, per run: tokens per CPU second and per wall second over the optimizer steps after
the first ``skip`` (allocations and the optimizer's lazily created states fall in those), tokens
counted as the launcher counts them for ``metrics.jsonl`` (the Trainer's ``num_input_tokens_seen``);
the trainable parameters; the bytes of the optimizer's states once trained (exact); the peak
resident memory of the run's process. On one torch thread the process's CPU time is the work
done, and it moves far less than wall time when other jobs take turns on the cores, so the ratio
of tokens per CPU second is the figure to read on a shared machine; wall time is beside it. Each
run is a fork of one parent that has imported everything and prepared the data and base model
(untimed), so every run starts from the same state and its peak memory is its own (the parent's
imports included, alike for all). Rounds interleave the variants (full, LoRA, ..., full, LoRA, ...)
so that load drift on a shared machine reaches all; the table gives medians and their ratios to
full fine-tuning, and a line per LoRA variant gives each round's paired ratio (their spread is the
noise). One torch thread (as ``sft_tokens.py``: steadier on a loaded machine).

What to expect on CPU: LoRA saves the weight gradients of the frozen layers (one of the two matrix
products of each linear layer's backward) and AdamW's update of all but the adapters, but it still
runs the whole forward and backpropagates through every frozen layer to reach the adapters below.
It also adds work on every adapted layer: two skinny matrix products (rank 16) forward and four
backward, which CPU BLAS runs far below its peak, and element-wise passes over the layer's input
and output (the dropout mask drawn for each adapted layer's input, the scaling, the addition).
On a narrow model that added work is as large as the saved work, so expect no more than a modest
gain, and possibly a loss; the GPU's gain is mostly memory (no gradients or Adam states for the
frozen weights, hence larger batches), which a tiny model cannot show. The first logged loss is
printed for every variant: with the adapters' B matrices starting at zero it is the same model on
the same batch, so they must agree.
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
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import command_line, machine_line, markdown_table, version_of  # noqa: E402
from sft_tokens import WORDS, word_tokenizer  # noqa: E402

FULL_NAME = "full fine-tuning (baseline)"
LORA_NAME = "LoRA r=16, all-linear"
LORA_NO_DROPOUT_NAME = "LoRA r=16, all-linear, dropout 0"
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
# Each variant's `model.lora` (None: full fine-tuning). The recipe's default dropout (0.05) draws a
# random mask over the input of every adapted layer at every step; the third row shows its share.
VARIANTS: dict[str, dict[str, Any] | None] = {
    FULL_NAME: None,
    LORA_NAME: LORA,
    LORA_NO_DROPOUT_NAME: {**LORA, "dropout": 0.0},
}


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    seq: int
    batch: int
    steps: int
    skip: int  # first steps left out of the timing
    rounds: int


FULL = Size(hidden=512, layers=4, heads=8, kv_heads=4, seq=256, batch=4, steps=8, skip=2, rounds=5)
QUICK = Size(hidden=64, layers=2, heads=4, kv_heads=2, seq=64, batch=2, steps=4, skip=1, rounds=1)


def model_config(size: Size) -> dict[str, Any]:
    return {
        "hidden_size": size.hidden,
        "intermediate_size": size.hidden * 7 // 2,  # Mistral's proportions (7168 / 2048)
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "max_position_embeddings": max(2 * size.seq, 128),
    }


def write_corpus(path: Path, size: Size) -> None:
    """Documents of 1/16 to 1/2 of a row (none cut), enough for every step's rows twice over."""
    rng = random.Random(0)
    needed, written = 2 * size.steps * size.batch * size.seq, 0
    with open(path, "w") as out:
        while written < needed:
            words = rng.randint(size.seq // 16, size.seq // 2 - 2)
            out.write(json.dumps({"text": " ".join(rng.choices(WORDS, k=words))}) + "\n")
            written += words + 2  # BOS and EOS


def base_recipe(size: Size, corpus: Path) -> dict[str, Any]:
    return {
        "name": "lora-tokens",
        "task": "sft",
        "model": {"architecture": "mistral", "config": model_config(size)},
        "data": {"files": {"train": str(corpus)}, "max_length": size.seq, "packing": True},
        "training": {
            "per_device_batch_size": size.batch,
            "max_steps": size.steps,
            "logging_steps": 1,
            "precision": "fp32",  # CPU
            "report_to": ["none"],
        },
        "checkpointing": {"strategy": "no"},
    }


def variant_recipes(base: dict[str, Any], base_model: Path) -> dict[str, dict[str, Any]]:
    """Every variant loads the same saved weights; LoRA adds adapters on top of them."""
    recipes = {}
    for name, lora in VARIANTS.items():
        model = {"pretrained": str(base_model), **({"lora": lora} if lora else {})}
        recipes[name] = {**base, "model": model}
    return recipes


def trainer_arguments(recipe: Any, work: Path) -> dict[str, Any]:
    """The plan's Trainer arguments for one process, as the rank gets them, without
    ``accelerator_config`` (it tells the Trainer to use the distributed state the rank creates,
    which an in-process run does not have)."""
    from launcher.contract import RunLayout
    from launcher.plan.batch import BatchNumbers
    from launcher.plan.trainer import trainer_arguments_json

    training = recipe.training
    batch = BatchNumbers(1, 1, training.per_device_batch_size, 1, recipe.data.max_length)
    args = trainer_arguments_json(recipe, batch, RunLayout(work / "run"), work / "checkpoints")
    args.pop("accelerator_config")
    args["disable_tqdm"] = True
    return args


def train_once(recipe_data: dict[str, Any], tokenizer: Any, rows: Any, work: Path,
               size: Size) -> dict[str, Any]:  # fmt: skip
    """One training run (in a forked child): the figures of the table, as JSON-able values."""
    from transformers import TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback

    from launcher.ranks.callbacks import KeepAdapterDtypes
    from launcher.ranks.model import build_model
    from launcher.ranks.trainers import build_trainer, make_training_arguments
    from launcher.recipe.schema import Recipe

    class StepClock(TrainerCallback):
        """When each optimizer step ended (wall and process CPU time), and the tokens seen."""

        def __init__(self) -> None:
            self.marks: list[tuple[float, float, int]] = []

        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            now = (time.perf_counter(), time.process_time(), state.num_input_tokens_seen)
            self.marks.append(now)

    recipe = Recipe.model_validate(recipe_data)
    args = make_training_arguments(recipe, trainer_arguments(recipe, work), use_cpu=True)
    set_seed(args.seed)
    model = build_model(recipe, tokenizer)
    clock = StepClock()
    trainer = build_trainer(recipe, model, tokenizer, args, {"train": rows}, [clock])
    trainer.remove_callback(PrinterCallback)  # as the rank does
    if recipe.model.lora is not None:
        trainer.add_callback(KeepAdapterDtypes(trainer.model))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    assert len(clock.marks) == size.steps, f"{len(clock.marks)} steps for {size.steps}"
    (wall0, cpu0, n0), (wall1, cpu1, n1) = clock.marks[size.skip - 1], clock.marks[-1]
    states = trainer.optimizer.state.values()
    state_bytes = sum(t.nbytes for s in states for t in s.values() if hasattr(t, "nbytes"))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    parameters = list(trainer.model.parameters())
    return {
        "tokens_per_second": (n1 - n0) / (wall1 - wall0),
        "tokens_per_cpu_second": (n1 - n0) / (cpu1 - cpu0),
        "tokens_per_step": (n1 - n0) / (size.steps - size.skip),
        "train_seconds": seconds,
        "trainable": sum(p.numel() for p in parameters if p.requires_grad),
        "total": sum(p.numel() for p in parameters),
        "optimizer_state_bytes": state_bytes,
        "first_loss": losses[0],
    }


def in_fork(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``work()`` in a forked child: its result and the child's peak resident memory (bytes).

    The child shares the parent's imports and prepared data (nothing to redo), and its peak is
    its own: the kernel starts a child's high-water mark at the memory it inherits."""
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's exit handlers
        code = 1
        try:
            os.close(read)
            try:
                payload, code = {"result": work()}, 0
            except BaseException:
                payload = {"error": traceback.format_exc()}
            with os.fdopen(write, "w") as out:
                json.dump(payload, out)
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as source:
        text = source.read()
    _, status, usage = os.wait4(pid, 0)
    reply = json.loads(text) if text else {"error": f"no reply (wait status {status})"}
    if "error" in reply:
        raise SystemExit(f"a training run failed:\n{reply['error'][-4000:]}")
    # ru_maxrss: KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return {**reply["result"], "peak_rss": usage.ru_maxrss * scale}


def measure(size: Size, work: Path) -> dict[str, list[dict[str, Any]]]:
    import datasets
    from transformers import set_seed

    from launcher.ranks.data_cache import prepare
    from launcher.ranks.model import save_base_model
    from launcher.recipe.schema import Recipe

    datasets.disable_progress_bars()
    corpus = work / "train.jsonl"
    write_corpus(corpus, size)
    tokenizer_dir = work / "tokenizer"
    tokenizer = word_tokenizer(tokenizer_dir)
    base = base_recipe(size, corpus)
    recipe = Recipe.model_validate(base)
    rows = prepare(recipe, tokenizer, tokenizer_dir, log=lambda m: None, root=work / "cache")
    rows = rows.splits["train"]
    assert len(rows) >= size.steps * size.batch, f"{len(rows)} packed rows: too few"
    base_model = work / "base-model"
    set_seed(recipe.training.seed)  # as the rank does before building the base model
    save_base_model(recipe, tokenizer, base_model)
    recipes = variant_recipes(base, base_model)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in recipes}
    for _ in range(size.rounds):  # interleaved: both variants share the machine's moods
        for name, data in recipes.items():
            run = in_fork(lambda data=data: train_once(data, tokenizer, rows, work, size))
            runs[name].append(run)
    return runs


def table(runs: dict[str, list[dict[str, Any]]]) -> tuple[str, str]:
    """The markdown table, and a line per LoRA variant with its ratios and their spread."""

    def median(measured: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in measured)

    wall_base = median(runs[FULL_NAME], "tokens_per_second")
    cpu_base = median(runs[FULL_NAME], "tokens_per_cpu_second")
    rows = []
    for name, measured in runs.items():
        first = measured[0]
        wall, cpu = median(measured, "tokens_per_second"), median(measured, "tokens_per_cpu_second")
        rows.append(
            (
                name,
                f"{first['trainable']:,} of {first['total']:,}",
                f"{first['optimizer_state_bytes'] / 2**20:.2f}",
                f"{median(measured, 'peak_rss') / 2**20:,.0f}",
                f"{first['first_loss']:.4f}",
                f"{first['tokens_per_step']:,.0f}",
                " ".join(f"{r['tokens_per_cpu_second']:,.0f}" for r in measured),
                f"{cpu:,.0f}",
                f"{cpu / cpu_base:.2f}x",
                f"{wall:,.0f}",
                f"{wall / wall_base:.2f}x",
            )
        )
    headers = (
        "variant",
        "trainable parameters",
        "optimizer states MiB",
        "peak RSS MiB",
        "step-1 loss",
        "tokens/step",
        "tokens/CPU s each round",
        "tokens/CPU s",
        "ratio",
        "tokens/s (wall)",
        "ratio (wall)",
    )
    lines = []
    for name, measured in runs.items():
        if name == FULL_NAME:
            continue
        pairs = list(zip(runs[FULL_NAME], measured, strict=True))
        cpu_each = " ".join(
            f"{lora['tokens_per_cpu_second'] / full['tokens_per_cpu_second']:.2f}"
            for full, lora in pairs
        )
        wall_each = " ".join(
            f"{lora['tokens_per_second'] / full['tokens_per_second']:.2f}" for full, lora in pairs
        )
        cpu = median(measured, "tokens_per_cpu_second") / cpu_base
        wall = median(measured, "tokens_per_second") / wall_base
        lines.append(
            f"{name} / full: {cpu:.2f} per CPU second (each round: {cpu_each}), "
            f"{wall:.2f} per wall second (each round: {wall_each})"
        )
    return markdown_table(headers, rows), "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (full, LoRA) to run")
    parser.add_argument("--steps", type=int, help="optimizer steps per run")
    options = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    # The children are forks: the tokenizers library's threads would not survive into them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    size = QUICK if options.quick else FULL
    size = Size(
        **{
            **size.__dict__,
            "rounds": options.rounds or size.rounds,
            "steps": options.steps or size.steps,
        }
    )
    if size.steps <= size.skip:
        parser.error(f"--steps {size.steps}: at least {size.skip + 1} (the first {size.skip} are "
                     "not timed)")  # fmt: skip
    import torch

    # One thread, set before any torch work: steadier ratios on a shared machine, and no OpenMP
    # thread pool in the parent for the forked children to inherit half-alive.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="lora-tokens-") as folder:
        runs = measure(size, Path(folder))
    config = model_config(size)
    print("# LoRA against full fine-tuning, tokens/s on CPU\n")
    print(machine_line() + f"; peft {version_of('peft')}")
    print(f"command: {command_line()}\n")
    print(
        f"model: mistral hidden {config['hidden_size']}, MLP {config['intermediate_size']}, "
        f"{size.layers} layers, {size.heads} heads ({size.kv_heads} KV), sdpa, fp32; rows: "
        f"{size.batch} x {size.seq} tokens, packed; {size.steps} steps per run, the first "
        f"{size.skip} not timed; {size.rounds} interleaved rounds; 1 torch thread; LoRA "
        f"alpha {LORA['alpha']}, dropout {LORA['dropout']} unless said\n"
    )
    rendered, line = table(runs)
    print(rendered)
    print(f"\n{line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
