"""One Trainer per task: TRL's SFTTrainer (packing), and HF Trainer for MLM and classification.

SFT rows arrive tokenized and packed (``launcher.ranks.data.sft_rows``); packed batches are
TRL's padding-free ones for flash attention, and rows with position ids reset per sample for SDPA
and eager attention (``launcher.ranks.packed_rows``).
"""

from __future__ import annotations

import math
from typing import Any

from transformers import Trainer

from launcher.recipe.schema import Recipe


class MaskedLMTrainer(Trainer):
    """MLM: evaluation on the same masks every time, and ``eval_perplexity = exp(eval_loss)``.

    The collator masks tokens at random. Training draws its masks from the global RNG (restored on
    resume, so a resumed run masks as the uninterrupted one did); each evaluation gets a collator
    of its own seeded with ``eval_mask_seed``, so that the same weights always get the same eval
    loss (in training, at the end, after a resume).

    ``Trainer.evaluate`` hands its metrics dict to ``log`` before returning it, so adding the key
    there makes it visible to the logs, the best-model selection and the caller alike.
    """

    def __init__(self, *args: Any, eval_mask_seed: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.eval_mask_seed = eval_mask_seed

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        from transformers import DataCollatorForLanguageModeling

        training_collator = self.data_collator
        self.data_collator = DataCollatorForLanguageModeling(
            training_collator.tokenizer,
            mlm=True,
            mlm_probability=training_collator.mlm_probability,
            seed=self.eval_mask_seed,
        )
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 700.0))
        super().log(logs, *args, **kwargs)


def make_training_arguments(recipe: Recipe, trainer_args: dict[str, Any], use_cpu: bool) -> Any:
    if recipe.task == "sft":
        from trl import SFTConfig

        return SFTConfig(**sft_arguments(trainer_args), use_cpu=use_cpu)
    from transformers import TrainingArguments

    return TrainingArguments(**trainer_args, use_cpu=use_cpu)


def sft_arguments(trainer_args: dict[str, Any]) -> dict[str, Any]:
    """The plan's SFT arguments, with TRL's own dataset preparation turned off.

    The rank hands SFTTrainer rows that ``launcher.ranks.data.sft_rows`` already tokenized and
    packed exactly as TRL would (and that the data cache keeps); preparing them again would pack
    packed rows, losing the sample boundaries. ``packing`` and ``packing_strategy`` still make
    TRL build its padding-free collator (position ids reset per sample), which ``build_trainer``
    replaces for SDPA and eager attention.
    """
    from launcher.ranks.data import PACKING_STRATEGY

    args = {**trainer_args}
    args["dataset_kwargs"] = {**(args.get("dataset_kwargs") or {}), "skip_prepare_dataset": True}
    strategy = args.setdefault("packing_strategy", PACKING_STRATEGY)
    if strategy != PACKING_STRATEGY:
        raise ValueError(f"packing_strategy {strategy!r}: the rank packs with {PACKING_STRATEGY!r}")
    return args


def build_trainer(
    recipe: Recipe,
    model: Any,
    tokenizer: Any,
    args: Any,
    splits: dict[str, Any],
    callbacks: list[Any],
) -> Any:
    common = {
        "model": model,
        "args": args,
        "train_dataset": splits["train"],
        "eval_dataset": splits.get("eval"),
        "processing_class": tokenizer,
        "callbacks": callbacks,
    }
    if recipe.task == "sft":
        from trl import SFTTrainer

        from launcher.ranks.packed_rows import ROW_ATTENTION, PackedRowsSFTTrainer

        if recipe.data.packing and recipe.model.attn_implementation in ROW_ATTENTION:
            return PackedRowsSFTTrainer(**common)
        return SFTTrainer(**common)
    if recipe.task == "mlm":
        from transformers import DataCollatorForLanguageModeling

        collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=recipe.data.mlm_probability
        )
        seed = recipe.training.seed
        return MaskedLMTrainer(**common, data_collator=collator, eval_mask_seed=seed)
    from transformers import DataCollatorWithPadding

    return Trainer(
        **common,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )


def accuracy(prediction: Any) -> dict[str, float]:
    import numpy as np

    logits = (
        prediction.predictions[0]
        if isinstance(prediction.predictions, tuple)
        else prediction.predictions
    )
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}
