"""Data as the tutorials ship it: headerless csv/tsv files (``data.column_names``), a random
sample of a split (``data.train_samples``), rows made into text by ``data.template``, and MLM
texts grouped into full blocks (``data.group_texts``); each one enters the data cache key.

Real parts: ``datasets`` reading real files written to ``tmp_path``, tokenizers trained by the
launcher's own tokenizer code, the transformers MLM collator.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from launcher.ranks.data import load_raw_splits, tokenize_splits
from launcher.ranks.data_cache import cache_key, summarize, summary_line
from launcher.ranks.data_options import DataOptionError
from launcher.ranks.text_blocks import BlockError
from launcher.recipe.schema import Recipe, TokenizerSection, TrainedTokenizerSection

ENCODER_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "to be or not that is the question whether tis nobler in mind suffer slings arrows".split()
PLAY = Path(__file__).resolve().parents[3] / "shared" / "data" / "rij.txt"


def short_lines(count: int, seed: int = 0) -> list[str]:
    """Lines of a play: 3 to 9 words each."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 9))).capitalize() for _ in range(count)]


def recipe(task: str, **data: Any) -> Recipe:
    fields = {"shuffle": False, "max_length": 32, **data}
    if task == "classification":
        fields.setdefault("labels", ["neg", "pos"])
    return Recipe.model_validate({"name": "opts", "task": task, "data": fields})


def encoder_tokenizer(texts: list[str]) -> Any:
    """A BERT-style WordPiece tokenizer (``[CLS] ... [SEP]``), trained as a run trains one."""
    from launcher.ranks.tokenizer import prepare_tokenizer

    section = TokenizerSection(
        train=TrainedTokenizerSection(
            algorithm="wordpiece",
            vocab_size=200,
            min_frequency=1,
            special_tokens=ENCODER_SPECIALS,
            lowercase=True,
        )
    )
    return prepare_tokenizer(section, model_pretrained=None, texts=lambda: texts)


@pytest.fixture(scope="module")
def mlm_tokenizer() -> Any:
    return encoder_tokenizer(short_lines(300, seed=1))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, mlm_tokenizer: Any) -> Path:
    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    mlm_tokenizer.save_pretrained(str(folder))
    return folder


# --- data.column_names ------------------------------------------------------------------------


def test_headerless_tsv_is_read_with_the_recipes_column_names(tmp_path: Path) -> None:
    """The first line is a row, not a header; texts with commas stay whole in a .tsv."""
    path = tmp_path / "reviews.tsv"
    path.write_text("Long, slow, lovely\t1\nDull\t0\nFine, I guess\t1\n")
    data = recipe("classification", files={"train": str(path)}, column_names=["review", "stars"])
    data.data.text_column, data.data.label_column = "review", "stars"
    split = load_raw_splits(data.data)["train"]
    assert split.column_names == ["review", "stars"]
    assert split["review"] == ["Long, slow, lovely", "Dull", "Fine, I guess"]
    assert split["stars"] == [1, 0, 1]


def test_column_names_that_do_not_fit_the_file_are_refused(tmp_path: Path) -> None:
    """pandas would turn the extra first field into an unnamed index: refuse instead."""
    path = tmp_path / "train.tsv"
    path.write_text("7\tgood film\t1\n8\tbad film\t0\n")
    data = recipe("classification", files={"train": str(path)}, column_names=["text", "label"])
    with pytest.raises(
        DataOptionError, match=r"data.column_names: names 2 columns .* has 3 fields"
    ):
        load_raw_splits(data.data)


# --- data.train_samples / data.eval_samples ---------------------------------------------------


def label_sorted_csv(path: Path, per_label: int) -> Path:
    """All negatives first, then all positives: IMDB's train split is sorted like this."""
    rows = [f"review {i} of label {label},{label}" for label in (0, 1) for i in range(per_label)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def test_train_samples_is_shuffle_then_select_and_balanced_where_a_slice_is_not(
    tmp_path: Path,
) -> None:
    import datasets

    path = label_sorted_csv(tmp_path / "train.csv", per_label=500)
    sampled = recipe("classification", files={"train": str(path)}, train_samples=200)
    split = load_raw_splits(sampled.data)["train"]
    whole = datasets.load_dataset("csv", data_files={"train": str(path)}, split="train")
    expected = whole.shuffle(seed=42).select(range(200))
    assert split.to_list() == expected.to_list()
    counts = Counter(split["label"])
    assert len(split) == 200 and 80 <= counts[0] <= 120 and 80 <= counts[1] <= 120, counts

    sliced = recipe("classification", files={"train": str(path)}, train_split="train[:200]")
    assert set(load_raw_splits(sliced.data)["train"]["label"]) == {0}  # the first rows: one label


def test_samples_are_drawn_after_the_hold_out_and_more_than_there_are_is_an_error(
    tmp_path: Path,
) -> None:
    path = label_sorted_csv(tmp_path / "train.csv", per_label=50)
    both = recipe(
        "classification",
        files={"train": str(path)},
        eval_fraction=0.2,
        train_samples=60,
        eval_samples=10,
    )
    splits = load_raw_splits(both.data)
    assert (len(splits["train"]), len(splits["eval"])) == (60, 10)
    assert not set(splits["train"]["text"]) & set(splits["eval"]["text"])

    too_many = recipe(
        "classification", files={"train": str(path)}, eval_fraction=0.2, train_samples=81
    )
    with pytest.raises(
        DataOptionError,
        match=r"data.train_samples: 81 samples asked for, but the train split has 80 rows "
        r"\(data.train_split 'train', less the data.eval_fraction 0.2 held out\)",
    ):
        load_raw_splits(too_many.data)


# --- data.template ----------------------------------------------------------------------------


def write_qa(path: Path) -> Path:
    rows = [
        {"q": "What is two and two?", "a": "Four.", "id": 1},
        {"q": "Who?", "a": "Me.", "id": 2},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_template_fills_each_rows_text_and_sft_prepares_that_text(tmp_path: Path) -> None:
    from test_data_prep import make_tokenizer

    template = "### Question: {q}\n### Answer: {a}"
    qa = str(write_qa(tmp_path / "qa.jsonl"))
    sft = recipe("sft", files={"train": qa}, template=template, packing=False, max_length=128)
    splits = load_raw_splits(sft.data)
    assert splits["train"]["text"] == [
        "### Question: What is two and two?\n### Answer: Four.",
        "### Question: Who?\n### Answer: Me.",
    ]
    tokenizer = make_tokenizer(tmp_path / "tok")
    rows = tokenize_splits(sft, splits, tokenizer)["train"]["input_ids"]
    eos = tokenizer.eos_token
    assert rows == [tokenizer(text + eos)["input_ids"] for text in splits["train"]["text"]]


def test_template_keeps_the_label_and_names_the_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('title,body,label\nGood,"A fine, long film",pos\nBad,Dull,neg\n')
    ok = recipe("classification", files={"train": str(path)}, template="{title}. {body}")
    split = load_raw_splits(ok.data)["train"]
    assert split["text"] == ["Good. A fine, long film", "Bad. Dull"]
    assert split["label"] == ["pos", "neg"]

    missing = recipe("classification", files={"train": str(path)}, template="{title}: {summary}")
    with pytest.raises(
        DataOptionError,
        match=r"data.template: 'summary' is not a column of the train split "
        r"\(columns: title, body, label\)",
    ):
        load_raw_splits(missing.data)
    # A near miss is named, as a recipe key's typo is.
    typo = recipe("classification", files={"train": str(path)}, template="{titel}: {body}")
    with pytest.raises(
        DataOptionError, match=r"\(columns: title, body, label; did you mean 'title'\?\)"
    ):
        load_raw_splits(typo.data)


def test_a_row_the_template_cannot_fill_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"n": "seven"}\n')
    bad = recipe("mlm", files={"train": str(path)}, template="{n:d} things")
    with pytest.raises(DataOptionError, match=r"data.template: cannot fill row 0 of the train"):
        load_raw_splits(bad.data)


# --- data.group_texts -------------------------------------------------------------------------


def mlm_splits(tmp_path: Path, lines: list[str], **data: Any) -> tuple[Recipe, dict[str, Any]]:
    path = tmp_path / "play.txt"
    path.write_text("\n".join(lines) + "\n")
    mlm = recipe("mlm", files={"train": str(path)}, **data)
    return mlm, load_raw_splits(mlm.data)


def test_grouped_blocks_are_full_and_are_the_tokenized_texts_end_to_end(
    tmp_path: Path, mlm_tokenizer: Any
) -> None:
    """As run_mlm.py: each text tokenized with its special tokens, untruncated, concatenated,
    cut into blocks of max_length, the partial last block dropped; every column cut alike."""
    lines = short_lines(200, seed=3)
    lines[7] = " ".join(WORDS * 4)  # longer than a block: kept whole, not truncated
    mlm, splits = mlm_splits(tmp_path, lines, group_texts=True)
    blocks = tokenize_splits(mlm, splits, mlm_tokenizer)["train"]

    encoded = mlm_tokenizer(lines, return_special_tokens_mask=True)
    stream = [i for ids in encoded["input_ids"] for i in ids]
    special = [m for mask in encoded["special_tokens_mask"] for m in mask]
    assert len(stream) > 40 * 32
    assert all(len(ids) == 32 for ids in blocks["input_ids"])
    assert len(blocks) == len(stream) // 32
    assert [i for ids in blocks["input_ids"] for i in ids] == stream[: len(blocks) * 32]
    assert [m for mask in blocks["special_tokens_mask"] for m in mask] == special[
        : len(blocks) * 32
    ]
    assert all(set(mask) == {1} for mask in blocks["attention_mask"])


def test_the_mlm_collator_never_masks_a_special_token_of_a_block(
    tmp_path: Path, mlm_tokenizer: Any
) -> None:
    from transformers import DataCollatorForLanguageModeling

    mlm, splits = mlm_splits(tmp_path, short_lines(200, seed=4), group_texts=True)
    blocks = tokenize_splits(mlm, splits, mlm_tokenizer)["train"]
    collator = DataCollatorForLanguageModeling(mlm_tokenizer, mlm_probability=0.9, seed=0)
    batch = collator(blocks.to_list())
    assert tuple(batch["input_ids"].shape) == (len(blocks), 32)
    special = batch["labels"].new_tensor(blocks["special_tokens_mask"]).bool()
    assert special.any()
    assert (batch["labels"][special] == -100).all()  # never a target
    assert (batch["labels"][~special] != -100).float().mean() > 0.8  # the rest at 0.9


def test_grouping_removes_the_padding_of_short_lines(tmp_path: Path, mlm_tokenizer: Any) -> None:
    lines = short_lines(400, seed=5)
    per_line, splits = mlm_splits(tmp_path, lines, max_length=64)
    padded = summarize(tokenize_splits(per_line, splits, mlm_tokenizer), 64)
    grouped_recipe, splits = mlm_splits(tmp_path, lines, max_length=64, group_texts=True)
    grouped = summarize(tokenize_splits(grouped_recipe, splits, mlm_tokenizer), 64)

    tokens, rows = padded["train"]["tokens"], padded["train"]["rows"]
    assert 1 - tokens / (rows * 64) > 0.6  # 3-9 words a line in rows of 64
    assert grouped["train"] == {"rows": tokens // 64, "tokens": tokens // 64 * 64, "max_length": 64}
    assert summary_line(grouped).endswith("padding 0.0% at 64")
    assert float(summary_line(padded).split("padding ")[1].split("%")[0]) > 60


@pytest.mark.skipif(not PLAY.is_file(), reason=f"{PLAY} is absent")
def test_grouping_a_play_by_lines_wastes_most_of_each_row(tmp_path: Path) -> None:
    """The measurement of the issue on the real play: most of each padded line is padding."""
    lines = [line.strip() for line in PLAY.read_text().splitlines() if line.strip()]
    tokenizer = encoder_tokenizer(lines)
    mlm = recipe("mlm", files={"train": str(PLAY)}, max_length=128)
    padded = summarize(tokenize_splits(mlm, load_raw_splits(mlm.data), tokenizer), 128)["train"]
    mlm.data.group_texts = True
    grouped = summarize(tokenize_splits(mlm, load_raw_splits(mlm.data), tokenizer), 128)["train"]
    assert 1 - padded["tokens"] / (padded["rows"] * 128) > 0.75
    assert grouped["tokens"] == grouped["rows"] * 128
    assert padded["tokens"] - grouped["tokens"] < 128  # only the partial last block is dropped


def test_a_split_shorter_than_one_block_is_an_error(tmp_path: Path, mlm_tokenizer: Any) -> None:
    mlm, splits = mlm_splits(tmp_path, ["to be"], group_texts=True, max_length=64)
    with pytest.raises(BlockError, match=r"data.group_texts: the train split has \d+ tokens"):
        tokenize_splits(mlm, splits, mlm_tokenizer)


def test_grouping_gives_the_same_blocks_with_any_process_count(
    tmp_path: Path, mlm_tokenizer: Any
) -> None:
    """data.num_proc is not in the cache key, so it must not move a block boundary."""
    lines = short_lines(300, seed=6)
    one, splits = mlm_splits(tmp_path, lines, group_texts=True)
    expected = tokenize_splits(one, splits, mlm_tokenizer)["train"].to_list()
    two, splits = mlm_splits(tmp_path, lines, group_texts=True, num_proc=2)
    assert tokenize_splits(two, splits, mlm_tokenizer)["train"].to_list() == expected


# --- the cache key ----------------------------------------------------------------------------


def test_each_option_changes_the_cache_key_and_their_defaults_change_nothing(
    tmp_path: Path, tokenizer_dir: Path
) -> None:
    tsv = tmp_path / "train.tsv"
    tsv.write_text("a\tb\n")

    def key(task: str = "mlm", **data: Any) -> tuple[str, dict[str, Any]]:
        made = recipe(task, files={"train": str(tsv)}, **data)
        return cache_key(made, tokenizer_dir, lambda: pytest.fail("local files: no loading"))

    base, description = key()
    for option in ("column_names", "train_samples", "eval_samples", "template", "group_texts"):
        assert option not in description
    assert description["shuffle_seed"] is None  # unshuffled: the seed shapes nothing
    changed = {
        "column_names": key(column_names=["text", "label"])[0],
        "train_samples": key(train_samples=10)[0],
        "eval_samples": key(eval_fraction=0.5, eval_samples=1)[0],
        "template": key(template="{text}!")[0],
        "group_texts": key(group_texts=True)[0],
        "the seed of a sample": key(train_samples=10, shuffle_seed=7)[0],
    }
    assert base not in changed.values()
    assert len(set(changed.values())) == len(changed), changed
    assert key(eval_fraction=0.5, eval_samples=1)[0] != key(eval_fraction=0.5)[0]
    assert key(group_texts=True)[0] == key(group_texts=True)[0]
