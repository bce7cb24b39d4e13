"""Packed SFT batches keep samples apart: the loss of each sample inside a packed batch equals its
loss alone.

The batches are made the way a run makes them: TRL's ``pack_dataset`` (``bfd``, what
``launcher.ranks.data.sft_rows`` calls) bins samples of different lengths into rows, then either
TRL's padding-free collator flattens the rows into one sequence (the flash-attention layout) or
the launcher's ``PackedRowsCollator`` keeps them as rows (its SDPA/eager layout); in both, position
ids restart at 0 for each sample. Eager and SDPA attention on CPU have no variable-length kernel:
transformers builds a block-diagonal mask from those position ids, but only when the forward runs
without a KV cache (``use_cache=False``, which SFTTrainer passes) and without an
attention mask. The tests without position resets show that the check can fail.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from launcher.ranks.packed_rows import PackedRowsCollator

MAX_LENGTH = 40
LENGTHS = [5, 17, 9, 30, 3, 12, 22, 7]
TOLERANCE = 1e-5
LAYOUTS = ["flattened", "rows"]


def tiny_mistral(attn: str) -> Any:
    from transformers import AutoModelForCausalLM, MistralConfig

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        use_cache=False,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    assert model.config._attn_implementation == attn
    return model.eval()


def samples() -> list[list[int]]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(3, 97, (n,), generator=generator).tolist() for n in LENGTHS]


def packed_rows() -> list[dict[str, Any]]:
    import datasets
    from trl import pack_dataset

    dataset = datasets.Dataset.from_dict({"input_ids": samples()})
    rows = pack_dataset(dataset, MAX_LENGTH, "bfd").to_list()
    assert len(rows) < len(LENGTHS), "several samples share a row"
    return rows


def collate(layout: str, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    if layout == "rows":
        return PackedRowsCollator(pad_token_id=0)(rows)
    return DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)


def sample_spans(layout: str, rows: list[dict[str, Any]], width: int) -> list[tuple[int, int]]:
    """Where each sample lies in the batch read row after row."""
    spans, start = [], 0
    for index, row in enumerate(rows):
        if layout == "rows":
            start = index * width
        for length in row["seq_lengths"]:
            spans.append((start, start + length))
            start += length
    return spans


def losses_per_sample(
    model: Any, batch: dict[str, torch.Tensor], spans: list[tuple[int, int]]
) -> dict[tuple[int, ...], float]:
    """Mean next-token loss of each sample inside the packed forward, keyed by its tokens."""
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    logits = model(**inputs).logits.flatten(0, 1)
    ids = batch["input_ids"].flatten()
    out = {}
    for start, end in spans:
        per_token = torch.nn.functional.cross_entropy(
            logits[start : end - 1], ids[start + 1 : end], reduction="none"
        )
        out[tuple(ids[start:end].tolist())] = per_token.mean().item()
    return out


def loss_alone(model: Any, sample: list[int]) -> float:
    ids = torch.tensor([sample])
    return model(input_ids=ids, labels=ids).loss.item()


def weighted_mean(alone: dict[tuple[int, ...], float]) -> float:
    """The batch loss the Trainer optimizes: the samples' losses weighted by predicted tokens."""
    return sum(alone[s] * (len(s) - 1) for s in alone) / sum(len(s) - 1 for s in alone)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_each_packed_sample_has_the_loss_it_has_alone(attn: str, layout: str) -> None:
    model, rows = tiny_mistral(attn), packed_rows()
    batch = collate(layout, rows)
    assert "attention_mask" not in batch  # a padding mask would hide the packing
    assert batch["input_ids"].shape[0] == (1 if layout == "flattened" else len(rows))
    spans = sample_spans(layout, rows, batch["input_ids"].shape[1])
    positions = batch["position_ids"].flatten()
    assert all(positions[start] == 0 for start, _ in spans)  # reset per sample

    with torch.no_grad():
        packed = losses_per_sample(model, batch, spans)
        alone = {tuple(s): loss_alone(model, s) for s in samples()}
        whole = model(**batch).loss.item()

    assert packed.keys() == alone.keys()
    worst = max(abs(packed[s] - alone[s]) for s in alone)
    assert worst < TOLERANCE, f"{attn}, {layout}: a packed sample's loss is off by {worst:.2e}"
    assert abs(whole - weighted_mean(alone)) < TOLERANCE


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_without_position_resets_samples_see_each_other(attn: str, layout: str) -> None:
    model, rows = tiny_mistral(attn), packed_rows()
    batch = collate(layout, rows)
    spans = sample_spans(layout, rows, batch["input_ids"].shape[1])
    width = batch["input_ids"].shape[1]
    batch["position_ids"] = torch.arange(width).expand_as(batch["input_ids"])  # no boundaries

    with torch.no_grad():
        packed = losses_per_sample(model, batch, spans)
        alone = {tuple(s): loss_alone(model, s) for s in samples()}

    differing = [s for s in alone if abs(packed[s] - alone[s]) > 1e-3]
    # Only the samples that open a sequence (the batch, or each row) see nothing before them.
    assert len(differing) == len(LENGTHS) - (1 if layout == "flattened" else len(rows))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_sft_trainer_loss_on_a_packed_batch_keeps_samples_apart(
    layout: str, tmp_path: Any
) -> None:
    """Through the trainer a rank builds, with the model config's default ``use_cache=True``:
    the trainer turns the cache off for its forward, so the batch loss is the samples' own
    losses averaged. Its ``num_tokens`` metric counts the whole batch."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from launcher.ranks.packed_rows import PackedRowsSFTTrainer
    from launcher.ranks.trainers import sft_arguments

    model = tiny_mistral("sdpa").train()
    model.config.use_cache = True
    rows = datasets.Dataset.from_list(packed_rows())
    args = {"output_dir": str(tmp_path), "max_length": MAX_LENGTH, "packing": True}
    args.update(report_to="none", use_cpu=True, bf16=False)
    trainer_class = PackedRowsSFTTrainer if layout == "rows" else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=SFTConfig(**sft_arguments(args)),
        train_dataset=rows,
        processing_class=tiny_tokenizer(),
    )
    assert isinstance(trainer.data_collator, PackedRowsCollator) == (layout == "rows")
    batch = trainer.data_collator(rows.to_list())
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
        alone = {tuple(s): loss_alone(model, s) for s in samples()}
    assert abs(loss - weighted_mean(alone)) < TOLERANCE
    assert trainer._metrics["train"]["num_tokens"] == [batch["input_ids"].numel()]


def tiny_tokenizer() -> Any:
    """A word-level tokenizer with the model's 97 ids (SFTTrainer wants one for the pad id)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 97)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", eos_token="</s>"
    )


# --- loss on answers only ---------------------------------------------------------------------


def answer_labels(sample: list[int], index: int) -> list[int]:
    """The sample's labels with the loss on its answer only: a prompt of a third of it (at
    least one token) labelled -100, as `data.loss_on: completion` or `assistant` leaves it."""
    prompt = max(1, len(sample) // 3) if index % 3 else len(sample) // 2
    return [-100] * prompt + sample[prompt:]


def masked_packed_rows() -> list[dict[str, Any]]:
    import datasets
    from trl import pack_dataset

    ids = samples()
    labels = [answer_labels(sample, i) for i, sample in enumerate(ids)]
    dataset = datasets.Dataset.from_dict({"input_ids": ids, "labels": labels})
    return pack_dataset(dataset, MAX_LENGTH, "bfd").to_list()


def masked_loss_alone(model: Any, sample: list[int], labels: list[int]) -> tuple[float, int]:
    """The sample's summed loss over its answer tokens alone, and how many tokens that is."""
    ids = torch.tensor([sample])
    logits = model(input_ids=ids).logits[0, :-1]
    targets = torch.tensor(labels[1:])
    losses = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
    return losses.item(), int((targets != -100).sum())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_packed_batch_with_answer_masks_has_the_loss_of_its_answers_alone(
    attn: str, layout: str
) -> None:
    """Packed with its labels, each sample keeps its own mask: the batch's labels are exactly the
    answer tokens, and the batch loss is the answers' loss with each sample alone (no sample sees
    another's tokens, no prompt token counts)."""
    model, rows = tiny_mistral(attn), masked_packed_rows()
    batch = collate(layout, rows)
    spans = sample_spans(layout, rows, batch["input_ids"].shape[1])
    flat_labels, flat_ids = batch["labels"].flatten(), batch["input_ids"].flatten()
    by_sample = {tuple(s): answer_labels(s, i) for i, s in enumerate(samples())}
    for start, end in spans:
        expected = by_sample[tuple(flat_ids[start:end].tolist())]
        assert flat_labels[start:end].tolist() == [-100, *expected[1:]]
    with torch.no_grad():
        whole = model(**batch).loss.item()
        alone = [masked_loss_alone(model, s, by_sample[tuple(s)]) for s in samples()]
    total, count = sum(loss for loss, _ in alone), sum(n for _, n in alone)
    assert count < sum(len(s) - 1 for s in samples()), "prompts are left out of the loss"
    assert abs(whole - total / count) < TOLERANCE
