"""One Trainer per task: TRL's SFTTrainer (packing), and HF Trainer for MLM and classification."""

from __future__ import annotations

import math
from typing import Any

from transformers import Trainer

from launcher.recipe.schema import Recipe


class PerplexityTrainer(Trainer):
    """Adds ``eval_perplexity = exp(eval_loss)`` to evaluation metrics (MLM).

    ``Trainer.evaluate`` hands its metrics dict to ``log`` before returning it, so adding the key
    here makes it visible to the logs, the best-model selection and the caller alike.
    """

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "eval_loss" in logs:
            logs["eval_perplexity"] = math.exp(min(logs["eval_loss"], 700.0))
        super().log(logs, *args, **kwargs)


def training_arguments(recipe: Recipe, trainer_args: dict[str, Any], use_cpu: bool) -> Any:
    if recipe.task == "sft":
        from trl import SFTConfig

        return SFTConfig(**trainer_args, use_cpu=use_cpu)
    from transformers import TrainingArguments

    return TrainingArguments(**trainer_args, use_cpu=use_cpu)


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

        return SFTTrainer(**common)
    if recipe.task == "mlm":
        from transformers import DataCollatorForLanguageModeling

        collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=recipe.data.mlm_probability
        )
        return PerplexityTrainer(**common, data_collator=collator)
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
