"""The baseline of benchmarks/launch_overhead.py: a TRL SFT script as a user writes it by hand.

No launcher code: load local JSON lines, a saved tokenizer, build a tiny Mistral from its config,
train with TRL's ``SFTTrainer`` (packing), save the model and tokenizer. It runs under
``accelerate launch`` with the accelerate config of the launcher's plan, as the plan's
``command.sh`` runs the launcher's ranks:

    python -m accelerate.commands.launch --config_file RUN/plan/accelerate.yaml \\
        benchmarks/handwritten_sft.py --data train.jsonl --tokenizer TOKENIZER \\
        --trainer-args RUN/plan/trainer_args.json --output OUT

The SFTConfig values are read from the plan's ``trainer_args.json`` (all but the launcher's own
``output_dir``, ``accelerator_config`` and ``dataset_kwargs``) so that the two runs cannot drift apart; a user would
type the same values. A small callback appends each log's time to ``OUT/metrics.jsonl``, like the
launcher's ``metrics.jsonl``, so that both sides report the time of their first optimizer step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# The model the launcher's `--smoke` builds for recipes/sft-mistral.yaml (launch_overhead.py
# checks that the plan's resolved model config still says so); vocabulary and special-token ids
# come from the tokenizer, as the launcher does for models built from config.
MODEL_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
}
SAMPLES = 96  # the smoke run's `train[:96]`
SEED = 42  # recipe data.shuffle_seed and training.seed
# The launcher's own: its run directory, its distributed state, and `dataset_kwargs` (the launcher
# tokenizes and packs before the Trainer; a hand-written script lets TRL do it).
LAUNCHER_ONLY_ARGS = ("output_dir", "accelerator_config", "dataset_kwargs")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="training JSON lines (text)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="saved tokenizer folder")
    parser.add_argument("--trainer-args", type=Path, required=True, help="SFTConfig values")
    parser.add_argument("--output", type=Path, required=True, help="folder for everything")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import torch
    from datasets import load_dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        MistralConfig,
        TrainerCallback,
        set_seed,
    )
    from trl import SFTConfig, SFTTrainer

    class LogTimes(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                record = {"step": state.global_step, "time": time.time(), **logs}
                with open(metrics, "a", encoding="utf-8") as stream:
                    stream.write(json.dumps(record) + "\n")

    metrics = args.output / "metrics.jsonl"
    args.output.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(args.output / "tensorboard"))

    values = json.loads(args.trainer_args.read_text())
    values = {key: value for key, value in values.items() if key not in LAUNCHER_ONLY_ARGS}
    config = SFTConfig(
        output_dir=str(args.output / "checkpoints"),
        use_cpu=not torch.cuda.is_available(),
        **values,
    )

    dataset = load_dataset("json", data_files=str(args.data), split=f"train[:{SAMPLES}]")
    dataset = dataset.filter(lambda row: bool(row["text"].strip()))
    dataset = dataset.shuffle(seed=SEED).select_columns(["text"])
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)

    set_seed(config.seed)
    ids = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    model_config = MistralConfig(
        vocab_size=len(tokenizer),
        **MODEL_CONFIG,
        **{k: v for k, v in ids.items() if v is not None},
    )
    model = AutoModelForCausalLM.from_config(model_config, attn_implementation="sdpa")

    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[LogTimes()],
    )
    trainer.train()
    trainer.save_model(str(args.output / "model"))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.output / "model")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
