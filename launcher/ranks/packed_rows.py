"""Packed SFT batches for attention without a variable-length kernel (SDPA, eager): kept as rows.

TRL's padding-free collator flattens a batch of packed rows into ONE sequence of rows x
max_length tokens and passes ``cu_seq_lens`` for flash attention's variable-length kernel, which
attends within each sample. SDPA and eager attention have no such kernel: transformers gives them
a dense block-diagonal mask over the whole flattened sequence, (rows x max_length)^2 entries, and
they compute attention over all of it. With 8 rows of 512 tokens on CPU, packed training that
way made 0.74x the real tokens per second of no packing at all; kept as rows, 2.7-2.9x
(benchmarks/sft_tokens.py).

Kept as a (rows, longest row) batch, attention costs rows x max_length^2, as much as an unpacked
batch, and every token in it is real but for the padding that ends the shorter rows (the last,
partly filled rows of the packing). Samples stay apart the same way: position ids restart at 0
for each sample, and transformers builds the mask block-diagonal from them, row by row, as long
as no attention mask is given (a padding mask would hide the packing from it; then samples would
attend to each other). tests/ranks/test_packing.py checks per-sample losses against each sample alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import SFTTrainer

# Attention implementations that get packed rows as rows; the others (flash attention) get
# TRL's padding-free batches.
ROW_ATTENTION = ("sdpa", "eager")


@dataclass
class PackedRowsCollator:
    """Rows of packed samples (``input_ids``, ``seq_lengths``) as one padded batch.

    Labels are -100 at each sample's first token (it would be predicted from the end of the
    sample before it; TRL's collator does the same) and on the padding.
    """

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(example["input_ids"]) for example in examples)
        ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full_like(ids, -100)
        positions = torch.zeros_like(ids)
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            ids[row, :length] = torch.as_tensor(example["input_ids"])
            labels[row, :length] = torch.as_tensor(example.get("labels", example["input_ids"]))
            positions[row, :length] = torch.cat([torch.arange(n) for n in example["seq_lengths"]])
        labels[positions == 0] = -100
        return {"input_ids": ids, "labels": labels, "position_ids": positions}


class PackedRowsSFTTrainer(SFTTrainer):
    """SFTTrainer with :class:`PackedRowsCollator` for training and evaluation batches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # TRL refuses a custom collator when packing; its own one is built, then replaced.
        self.data_collator = PackedRowsCollator(self.processing_class.pad_token_id)

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """TRL's loss; only its ``num_tokens`` metric is corrected for batches of rows.

        Without an attention mask TRL counts ``position_ids.size(1)`` tokens, one row's worth
        (right for its flattened batches); here a batch holds rows x length tokens.
        """
        counted = self._total_train_tokens
        result = super().compute_loss(model, inputs, *args, **kwargs)
        if self._total_train_tokens != counted:  # a training step: count the whole batch
            tokens = torch.tensor(inputs["input_ids"].numel(), device=inputs["input_ids"].device)
            every_rank = self.accelerator.gather_for_metrics(tokens).sum().item()
            self._total_train_tokens = counted + every_rank // self._tp_size
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return result
