"""One Trainer per task: TRL's SFTTrainer (packing), and HF Trainer for MLM and classification.

SFT rows arrive tokenized and packed (``launcher.ranks.data.sft_rows``); packed batches are
TRL's padding-free ones for flash attention, and rows with position ids reset per sample for SDPA
and eager attention (``launcher.ranks.packed_rows``).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback

from launcher.recipe.schema import Recipe


class BatchSeededMasking(DataCollatorForLanguageModeling):
    """MLM training masks drawn per batch from a generator seeded with (seed, rank, batch number),
    so that a resumed run masks every batch as the uninterrupted run did.

    Masks from the global RNG are not restored exactly on resume: accelerate's data loader
    collates the next batch before the step's checkpoint is saved (to know whether it is the
    last), so the RNG state in a checkpoint is already past that batch's masks and the resumed run
    masks it anew. The batch number restarts where the resumed run starts (``NumberBatches``)."""

    def __init__(self, tokenizer: Any, mlm_probability: float, seed: int, rank: int):
        super().__init__(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed)
        self.rank, self.next_batch = rank, 0

    def torch_call(self, examples: list[Any]) -> dict[str, Any]:
        key = f"{self.seed}/{self.rank}/{self.next_batch}".encode()
        seed = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
        self.generator = torch.Generator().manual_seed(seed)
        self.next_batch += 1
        return super().torch_call(examples)


class NumberBatches(TrainerCallback):
    """Sets the masking collator's batch number to the first batch this run trains: after a
    resume, the batches the Trainer skips are never collated, so they are counted here."""

    def __init__(self, collator: BatchSeededMasking):
        self.collator = collator

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        per_epoch = len(train_dataloader) if train_dataloader is not None else 0
        if not per_epoch:
            self.collator.next_batch = state.global_step * args.gradient_accumulation_steps
            return
        steps_per_epoch = max(math.ceil(per_epoch / args.gradient_accumulation_steps), 1)
        epochs, steps = divmod(state.global_step, steps_per_epoch)
        self.collator.next_batch = epochs * per_epoch + steps * args.gradient_accumulation_steps


class MaskedLMTrainer(Trainer):
    """MLM: evaluation on the same masks every time, and ``eval_perplexity = exp(eval_loss)``.

    The collator masks tokens at random. Training masks each batch from its own seed
    (``BatchSeededMasking``: a resumed run masks as the uninterrupted one did); each evaluation
    gets a collator of its own seeded with ``eval_mask_seed``, so that the same weights always get
    the same eval loss (in training, at the end, after a resume).

    ``Trainer.evaluate`` hands its metrics dict to ``log`` before returning it, so adding the key
    there makes it visible to the logs, the best-model selection and the caller alike.
    """

    def __init__(self, *args: Any, eval_mask_seed: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.eval_mask_seed = eval_mask_seed
        if isinstance(self.data_collator, BatchSeededMasking):
            self.add_callback(NumberBatches(self.data_collator))

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
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
        seed = recipe.training.seed
        rank = args.process_index
        collator = BatchSeededMasking(tokenizer, recipe.data.mlm_probability, seed, rank)
        return MaskedLMTrainer(**common, data_collator=collator, eval_mask_seed=seed)
    if recipe.task == "token_classification":
        from transformers import DataCollatorForTokenClassification

        return Trainer(
            **common,
            data_collator=DataCollatorForTokenClassification(tokenizer),
            compute_metrics=EntityMetrics(recipe.data.labels or []),
            # Only the predicted tag ids are kept across the evaluation, not every logit.
            preprocess_logits_for_metrics=predicted_ids,
        )
    from transformers import DataCollatorWithPadding

    return Trainer(
        **common,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )


def accuracy(prediction: Any) -> dict[str, float]:
    """Accuracy, and precision, recall and F1: of the positive class (id 1) with two labels, the
    unweighted mean over the labels (macro) with more, as scikit-learn's ``binary`` and
    ``macro`` averages define them (a label never predicted has precision 0)."""
    import numpy as np

    logits = (
        prediction.predictions[0]
        if isinstance(prediction.predictions, tuple)
        else prediction.predictions
    )
    predicted, gold = np.argmax(logits, axis=-1), np.asarray(prediction.label_ids)
    labels = [1] if logits.shape[-1] == 2 else list(range(logits.shape[-1]))
    scores = np.array([precision_recall_f1(predicted, gold, label) for label in labels])
    precision, recall, f1 = (float(value) for value in scores.mean(axis=0))
    return {
        "accuracy": float((predicted == gold).mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def precision_recall_f1(predicted: Any, gold: Any, label: int) -> tuple[float, float, float]:
    true_positives = float(((predicted == label) & (gold == label)).sum())
    said, there = float((predicted == label).sum()), float((gold == label).sum())
    precision = true_positives / said if said else 0.0
    recall = true_positives / there if there else 0.0
    total = precision + recall
    return precision, recall, (2 * precision * recall / total if total else 0.0)


def predicted_ids(logits: Any, labels: Any) -> Any:
    """The tag each sub-token is given (the Trainer keeps these instead of the logits)."""
    return (logits[0] if isinstance(logits, tuple) else logits).argmax(dim=-1)


class EntityMetrics:
    """Token classification: entity-level precision, recall and F1 (seqeval's definition,
    ``launcher.ranks.entities``) and the share of tagged tokens predicted right, over the
    positions that carry a tag (the first sub-token of each word, or every sub-token with
    ``data.label_all_tokens``)."""

    def __init__(self, names: list[str]):
        self.names = names

    def __call__(self, prediction: Any) -> dict[str, float]:
        import numpy as np

        from launcher.ranks.entities import entity_scores
        from launcher.ranks.token_tags import IGNORED

        predicted = np.asarray(prediction.predictions)
        gold_rows, predicted_rows = [], []
        for gold_ids, predicted_ids in zip(prediction.label_ids, predicted, strict=True):
            tagged = gold_ids != IGNORED
            gold_rows.append([self.names[i] for i in gold_ids[tagged]])
            predicted_rows.append([self.names[i] for i in predicted_ids[tagged]])
        return entity_scores(gold_rows, predicted_rows)
