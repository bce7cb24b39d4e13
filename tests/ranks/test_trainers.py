"""The per-task trainers (launcher/ranks/trainers.py), in process on a tiny model."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import BertWordPieceTokenizer
from transformers import (
    DataCollatorForLanguageModeling,
    DistilBertConfig,
    DistilBertForMaskedLM,
    PreTrainedTokenizerFast,
    TrainingArguments,
)

from launcher.ranks.trainers import MaskedLMTrainer

TEXT = [f"the {w} sat on the mat and looked at the {v} all day" for w in "abcdefgh" for v in "xyz"]


def wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(TEXT, vocab_size=100, min_frequency=1)
    return PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip


def test_mlm_evaluation_masks_the_same_tokens_every_time(tmp_path: Path) -> None:
    """The same weights get the same eval loss at every evaluation (the final one equals the
    in-training one), whatever the global random state."""
    tokenizer = wordpiece_tokenizer()
    rows = [dict(tokenizer(text)) for text in TEXT]
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=1, n_heads=2,
        max_position_embeddings=64,
    )  # fmt: skip
    trainer = MaskedLMTrainer(
        model=DistilBertForMaskedLM(config),
        args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]),
        eval_dataset=rows,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3),
        eval_mask_seed=7,
    )
    torch.manual_seed(0)
    first = trainer.evaluate()
    torch.manual_seed(123)  # whatever training did in between
    second = trainer.evaluate()
    assert first["eval_loss"] == second["eval_loss"]
    assert second["eval_perplexity"] > 1
    # Another seed masks other tokens: the seed is what makes the masks the same.
    trainer.eval_mask_seed = 8
    assert trainer.evaluate()["eval_loss"] != first["eval_loss"]
    # The training collator is left as it was.
    assert trainer.data_collator.seed is None


def test_training_masks_depend_on_the_batch_number_not_on_the_global_rng() -> None:
    """A resumed run collates the batch after its checkpoint again, with the global RNG already
    past it (the data loader collated it before the save): masks keyed by (seed, rank, batch
    number) come out as the uninterrupted run's did."""
    from types import SimpleNamespace

    from launcher.ranks.trainers import BatchSeededMasking, NumberBatches

    tokenizer = wordpiece_tokenizer()
    rows = [dict(tokenizer(text)) for text in TEXT]
    collator = BatchSeededMasking(tokenizer, mlm_probability=0.5, seed=42, rank=0)
    torch.manual_seed(0)
    first, second = collator(rows), collator(rows)
    assert not torch.equal(first["labels"], second["labels"])  # each batch masked anew
    resumed = BatchSeededMasking(tokenizer, mlm_probability=0.5, seed=42, rank=0)
    # Resumed at step 3, 2 batches a step, 5 batches an epoch (3 steps, the last of 1 batch):
    # epoch 1 begins, at batch 5.
    NumberBatches(resumed).on_train_begin(
        SimpleNamespace(gradient_accumulation_steps=2), SimpleNamespace(global_step=3), None,
        train_dataloader=[None] * 5,
    )  # fmt: skip
    assert resumed.next_batch == 5
    resumed.next_batch = 1
    torch.manual_seed(123)  # whatever the restored RNG state is
    assert torch.equal(resumed(rows)["labels"], second["labels"])
    assert torch.equal(resumed(rows)["input_ids"], collator(rows)["input_ids"])  # batch 2 both
    other_rank = BatchSeededMasking(tokenizer, mlm_probability=0.5, seed=42, rank=1)
    assert not torch.equal(other_rank(rows)["labels"], first["labels"])


def test_progress_lines_every_interval_and_at_the_end() -> None:
    """Where output is a file, progress is a line every 30 s and one at the end (rank 0 only),
    not a bar redrawn at every step."""
    from types import SimpleNamespace

    from launcher.ranks.callbacks import ProgressLines

    now, said = [100.0], []
    progress = ProgressLines(every_s=30, clock=lambda: now[0], out=said.append)
    state = SimpleNamespace(global_step=0, max_steps=300, is_world_process_zero=True)
    progress.on_train_begin(None, state, None)
    for step in range(1, 301):
        now[0] += 0.5  # 2 steps/s
        state.global_step = step
        progress.on_log(None, state, None, logs={"loss": 3.0 - step / 300})
        progress.on_step_end(None, state, None)
    progress.on_train_end(None, state, None)
    assert len(said) == 5  # 150 s of training: at 30, 60, 90 and 120 s, then the end
    assert said[0] == "[launcher] step 60/300 (20%), loss 2.8, 2 steps/s, 120 s left"
    assert said[-1] == "[launcher] step 300/300 (100%), loss 2, 2 steps/s"
    other_rank = ProgressLines(every_s=0, clock=lambda: now[0], out=said.append)
    state.is_world_process_zero = False
    other_rank.on_train_begin(None, state, None)
    other_rank.on_train_end(None, state, None)
    assert len(said) == 5


def test_classification_reports_precision_recall_and_f1_beside_accuracy() -> None:
    """By hand: two labels score the positive class (id 1); more labels average over them."""
    from types import SimpleNamespace

    import numpy as np
    import pytest

    from launcher.ranks.trainers import accuracy

    def scores(predicted: list[int], gold: list[int], classes: int) -> dict[str, float]:
        logits = np.eye(classes)[predicted]  # one-hot: argmax is the prediction
        return accuracy(SimpleNamespace(predictions=logits, label_ids=np.array(gold)))

    binary = scores([1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0], 2)
    # 1 predicted 3 times, 2 right; 3 gold positives, 2 found.
    assert binary == pytest.approx(
        {"accuracy": 4 / 6, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3}
    )
    three = scores([0, 0, 1, 1, 0, 1], [0, 1, 1, 1, 2, 2], 3)
    # label 0: p 1/3 r 1; label 1: p 2/3 r 2/3; label 2: never predicted, p 0 r 0.
    precision, recall = (1 / 3 + 2 / 3 + 0) / 3, (1 + 2 / 3 + 0) / 3
    f1 = (2 * (1 / 3) / (4 / 3) + 2 / 3 + 0) / 3
    assert three == pytest.approx(
        {"accuracy": 3 / 6, "precision": precision, "recall": recall, "f1": f1}
    )
