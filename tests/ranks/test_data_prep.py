"""The data cache: its key follows everything that shapes the prepared rows, a second preparation
is a hit with the same rows, and a preparation cut short is never used. The SFT rows the launcher
prepares collate exactly like those TRL's own ``SFTTrainer`` preparation makes.

Real parts: a byte-level BPE tokenizer trained by the launcher's tokenizer code on a few KB of
generated text, local JSON-lines files, ``datasets`` and TRL as installed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.ranks.data_cache import Prepared, cache_key, cache_root, prepare
from launcher.recipe.schema import Recipe, TokenizerSection, TrainedTokenizerSection

WORDS = "the a of to and in is it that for on with as was at by this be from or an are".split()
WORDS += "model data token packing cache runner sample batch length short long".split()


def texts(count: int, seed: int) -> list[str]:
    """Skewed lengths, like real SFT corpora: most samples short, one in eight long."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = rng.randint(40, 90) if rng.random() < 0.125 else rng.randint(2, 12)
        out.append(" ".join(rng.choices(WORDS, k=words)).capitalize() + ".")
    return out


def write_jsonl(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in rows))
    return path


def make_tokenizer(folder: Path, vocab_size: int = 300, extra: list[str] | None = None) -> Any:
    """Train and save a small tokenizer the way a run's tokenizer stage does."""
    from launcher.ranks.tokenizer import prepare_tokenizer
    from launcher.ranks.tokenizer_stage import load_saved_tokenizer, save_tokenizer

    section = TokenizerSection(
        pad_token="eos",
        special_tokens=extra or [],
        train=TrainedTokenizerSection(
            algorithm="byte_level_bpe",
            vocab_size=vocab_size,
            min_frequency=1,
            special_tokens=["<unk>", "<s>", "</s>"],
        ),
    )
    tokenizer = prepare_tokenizer(
        section, model_pretrained=None, texts=lambda: texts(200, seed=1), model_max_length=64
    )
    save_tokenizer(tokenizer, folder)
    return load_saved_tokenizer(folder)


def recipe_for(train: Path, task: str = "sft", **data: Any) -> Recipe:
    fields = {"files": {"train": str(train)}, "max_length": 48, **data}
    return Recipe.model_validate({"name": "prep", "task": task, "data": fields})


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tok") / "tokenizer"
    make_tokenizer(folder)
    return folder


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", texts(160, seed=2))


def key_of(recipe: Recipe, tokenizer_dir: Path) -> str:
    def no_raw() -> dict[str, Any]:
        raise AssertionError("local files are keyed without loading them")

    return cache_key(recipe, tokenizer_dir, no_raw)[0]


def quiet(message: str) -> None:
    pass


def run_prepare(recipe: Recipe, tokenizer_dir: Path, root: Path) -> Prepared:
    from launcher.ranks.tokenizer_stage import load_saved_tokenizer

    return prepare(recipe, load_saved_tokenizer(tokenizer_dir), tokenizer_dir, log=quiet, root=root)


def rows(prepared: Prepared) -> dict[str, list[dict[str, Any]]]:
    return {name: split.to_list() for name, split in prepared.splits.items()}


# --- the key ----------------------------------------------------------------------------------


def test_key_changes_with_tokenizer_data_max_length_and_packing(
    tokenizer_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    base = key_of(recipe_for(corpus), tokenizer_dir)
    assert base == key_of(recipe_for(corpus), tokenizer_dir)

    other_tokenizer = tmp_path / "other-tokenizer"
    make_tokenizer(other_tokenizer, vocab_size=280)
    added_token = tmp_path / "added-token"
    make_tokenizer(added_token, extra=["<tool>"])
    changed = {
        "tokenizer (vocabulary)": key_of(recipe_for(corpus), other_tokenizer),
        "tokenizer (a special token)": key_of(recipe_for(corpus), added_token),
        "max_length": key_of(recipe_for(corpus, max_length=32), tokenizer_dir),
        "packing": key_of(recipe_for(corpus, packing=False), tokenizer_dir),
        "shuffle seed": key_of(recipe_for(corpus, shuffle_seed=7), tokenizer_dir),
        "eval fraction": key_of(recipe_for(corpus, eval_fraction=0.1), tokenizer_dir),
        "split slice": key_of(recipe_for(corpus, train_split="train[:50]"), tokenizer_dir),
        "task": key_of(recipe_for(corpus, task="mlm"), tokenizer_dir),
    }
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join(lines[:-1] + [lines[-1].replace("a", "b")]) + "\n")
    changed["one character of the data"] = key_of(recipe_for(corpus), tokenizer_dir)
    assert {name: key for name, key in changed.items() if key == base} == {}
    assert len(set(changed.values())) == len(changed)


def test_key_follows_content_not_path_or_time(
    tokenizer_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    base = key_of(recipe_for(corpus), tokenizer_dir)
    os.utime(corpus, (1_000_000_000, 1_000_000_000))  # touched: same bytes
    assert key_of(recipe_for(corpus), tokenizer_dir) == base
    elsewhere = tmp_path / "copy" / "renamed.jsonl"
    elsewhere.parent.mkdir()
    shutil.copy(corpus, elsewhere)
    assert key_of(recipe_for(elsewhere), tokenizer_dir) == base
    copied_tokenizer = tmp_path / "tokenizer copy"
    shutil.copytree(tokenizer_dir, copied_tokenizer)
    assert key_of(recipe_for(corpus), copied_tokenizer) == base


def test_classification_key_follows_labels(tokenizer_dir: Path, tmp_path: Path) -> None:
    train = tmp_path / "reviews.jsonl"
    train.write_text(json.dumps({"text": "good", "label": "pos"}) + "\n")
    two = recipe_for(train, task="classification", labels=["neg", "pos"])
    swapped = recipe_for(train, task="classification", labels=["pos", "neg"])
    assert key_of(two, tokenizer_dir) != key_of(swapped, tokenizer_dir)


@pytest.mark.process
def test_key_is_the_same_in_a_fresh_process(tokenizer_dir: Path, corpus: Path) -> None:
    recipe = recipe_for(corpus, eval_fraction=0.1)
    code = (
        "import json, sys; from pathlib import Path\n"
        "from launcher.ranks.data_cache import cache_key\n"
        "from launcher.recipe.schema import Recipe\n"
        "recipe = Recipe.model_validate(json.loads(sys.argv[1]))\n"
        "print(cache_key(recipe, Path(sys.argv[2]), dict)[0])\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code, recipe.model_dump_json(), str(tokenizer_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert fresh.stdout.strip() == key_of(recipe, tokenizer_dir)


def test_hub_dataset_key_uses_the_datasets_fingerprint(tokenizer_dir: Path, tmp_path: Path) -> None:
    """`data.dataset` goes through `load_dataset(id)`: here a local folder stands in for the hub."""
    folder = tmp_path / "hub-like"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", texts(40, seed=3))
    recipe = Recipe.model_validate(
        {"name": "prep", "task": "sft", "data": {"dataset": str(folder), "max_length": 48}}
    )
    from launcher.ranks.data import load_raw_splits

    def raw() -> dict[str, Any]:
        return load_raw_splits(recipe.data)

    key, description = cache_key(recipe, tokenizer_dir, raw)
    assert description["source"]["dataset"] == str(folder)
    assert description["source"]["fingerprints"]["train"]
    assert cache_key(recipe, tokenizer_dir, raw)[0] == key
    write_jsonl(folder / "train.jsonl", texts(41, seed=3))
    assert cache_key(recipe, tokenizer_dir, raw)[0] != key


def test_cache_root_is_per_user_and_can_be_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    data = recipe_for(Path("x.jsonl")).data
    monkeypatch.delenv("LAUNCHER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert cache_root(data) == Path("/somewhere/cache/launcher/data")
    monkeypatch.setenv("LAUNCHER_CACHE", "/shared/launcher")
    assert cache_root(data) == Path("/shared/launcher/data")


def test_cache_off_and_cache_dir_choose_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHER_CACHE", str(tmp_path / "from-the-environment"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    train = Path("x.jsonl")
    assert cache_root(recipe_for(train).data) == tmp_path / "from-the-environment" / "data"
    assert cache_root(recipe_for(train, cache=False).data) is None
    assert cache_root(recipe_for(train, cache=False, cache_dir="/shared/prepared").data) is None
    assert cache_root(recipe_for(train, cache_dir="/shared/prepared").data) == Path(
        "/shared/prepared"
    ), "the recipe's folder wins over LAUNCHER_CACHE, as given (no /data appended)"
    assert cache_root(recipe_for(train, cache_dir="~/prepared").data) == (
        tmp_path / "home" / "prepared"
    )


def test_preparation_honours_cache_off_and_cache_dir(
    tokenizer_dir: Path, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a rank does (no ``root`` given): ``data.cache: false`` prepares every time and
    writes nothing; ``data.cache_dir`` keeps the copy there and nowhere else."""
    from launcher.ranks.tokenizer_stage import load_saved_tokenizer

    default = tmp_path / "default-cache"
    monkeypatch.setenv("LAUNCHER_CACHE", str(default))
    tokenizer = load_saved_tokenizer(tokenizer_dir)
    said: list[str] = []

    def run(recipe: Recipe) -> Prepared:
        return prepare(recipe, tokenizer, tokenizer_dir, log=said.append)

    off = recipe_for(corpus, cache=False)
    first, second = run(off), run(off)
    assert (first.hit, second.hit) == (False, False)
    assert (first.path, second.path) == (None, None)
    assert rows(second) == rows(first)
    assert not default.exists()
    assert sum("not cached (data.cache off)" in line for line in said) == 2, said

    chosen = tmp_path / "chosen cache"
    moved = recipe_for(corpus, cache_dir=str(chosen))
    first, second = run(moved), run(moved)
    assert (first.hit, second.hit) == (False, True)
    assert second.path == chosen / first.key
    assert [p.name for p in chosen.iterdir()] == [first.key]
    assert not default.exists()


# --- hits, misses and partial copies ---------------------------------------------------------


@pytest.mark.parametrize("task", ["sft", "mlm"])
def test_second_preparation_is_a_hit_with_the_same_rows(
    task: str, tokenizer_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    recipe = recipe_for(corpus, task=task, eval_fraction=0.2)
    first = run_prepare(recipe, tokenizer_dir, tmp_path / "cache")
    second = run_prepare(recipe, tokenizer_dir, tmp_path / "cache")

    assert (first.hit, second.hit) == (False, True)
    assert first.key == second.key and second.path == tmp_path / "cache" / first.key
    assert set(second.splits) == {"train", "eval"}
    assert rows(second) == rows(first)
    assert second.summary == first.summary
    assert second.summary["train"]["tokens"] == sum(
        len(r["input_ids"]) for r in rows(first)["train"]
    )
    # What the cache holds is what preparing without it gives.
    fresh = run_prepare(recipe, tokenizer_dir, tmp_path / "elsewhere")
    assert not fresh.hit and rows(fresh) == rows(first)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.key]


@pytest.mark.process
def test_a_partial_copy_left_by_a_killed_rank_is_not_used(
    tokenizer_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    root = tmp_path / "cache"
    recipe = recipe_for(corpus)
    key = key_of(recipe, tokenizer_dir)
    # A complete-looking copy of OTHER data under the partial name a killed rank would leave.
    other = run_prepare(
        recipe_for(write_jsonl(tmp_path / "other.jsonl", texts(30, seed=9))), tokenizer_dir, root
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    partial = root / f"{key}.partial-{socket.gethostname()}-{dead.pid}"
    assert other.path is not None
    other.path.rename(partial)

    prepared = run_prepare(recipe, tokenizer_dir, root)

    assert not prepared.hit
    assert rows(prepared) != rows(other)
    assert rows(prepared) == rows(run_prepare(recipe, tokenizer_dir, tmp_path / "clean"))
    assert not partial.exists(), "a dead process's partial copy is cleaned up"
    assert run_prepare(recipe, tokenizer_dir, root).hit


def test_a_damaged_copy_is_prepared_again(
    tokenizer_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    recipe = recipe_for(corpus)
    first = run_prepare(recipe, tokenizer_dir, tmp_path / "cache")
    assert first.path is not None
    for arrow in first.path.rglob("*.arrow"):
        arrow.unlink()
    again = run_prepare(recipe, tokenizer_dir, tmp_path / "cache")
    assert not again.hit and rows(again) == rows(first)


# --- SFT rows are TRL's -----------------------------------------------------------------------


@pytest.mark.parametrize("packing", [True, False])
def test_sft_rows_collate_like_trl_own_preparation(
    packing: bool, tokenizer_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """SFTTrainer preparing the raw text itself (what the launcher did before it cached) and the
    launcher's prepared rows give the same batches: same ids, same labels, same position ids."""
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from launcher.ranks.tokenizer_stage import load_saved_tokenizer
    from launcher.ranks.trainers import sft_arguments

    recipe = recipe_for(corpus, packing=packing, shuffle=False)
    ours = run_prepare(recipe, tokenizer_dir, tmp_path / "cache").splits["train"]

    tokenizer = load_saved_tokenizer(tokenizer_dir)
    common = {"output_dir": str(tmp_path / "out"), "max_length": 48, "packing": packing}
    common.update(report_to="none", use_cpu=True, bf16=False)
    raw = datasets.Dataset.from_list([json.loads(line) for line in corpus.read_text().splitlines()])
    theirs = SFTTrainer(
        model=tiny_mistral(len(tokenizer)),
        args=SFTConfig(**common),
        train_dataset=raw,
        processing_class=tokenizer,
    )
    launcher_trainer = SFTTrainer(
        model=tiny_mistral(len(tokenizer)),
        args=SFTConfig(**sft_arguments(common)),
        train_dataset=ours,
        processing_class=tokenizer,
    )
    trl_rows = theirs.train_dataset
    assert len(ours) == len(trl_rows)
    assert len(ours) < len(raw) if packing else len(ours) == len(raw)
    assert all(row["labels"] == row["input_ids"] for row in trl_rows)  # why ours leaves them out
    for start in range(0, len(ours), 4):
        batch = list(range(start, min(start + 4, len(ours))))
        expected = theirs.data_collator([trl_rows[i] for i in batch])
        got = launcher_trainer.data_collator([ours[i] for i in batch])
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.equal(torch.as_tensor(expected[name]), torch.as_tensor(got[name])), name
    if packing:
        assert "position_ids" in expected and "attention_mask" not in expected


def tiny_mistral(vocab_size: int) -> Any:
    """A one-layer Mistral for SFTTrainer to be built around (it prepares data, never trains)."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return MistralForCausalLM(config)


def test_process_count_changes_no_row(tokenizer_dir: Path, corpus: Path, tmp_path: Path) -> None:
    """So `data.num_proc` (and its default, one process per core for big splits) is rightly
    left out of the cache key."""
    from launcher.ranks.data import processes

    one = run_prepare(recipe_for(corpus, num_proc=1), tokenizer_dir, tmp_path / "one")
    two = run_prepare(recipe_for(corpus, num_proc=2), tokenizer_dir, tmp_path / "two")
    assert one.key == two.key and not two.hit
    assert rows(one) == rows(two)
    assert processes(recipe_for(corpus).data, rows=500) is None  # small: not worth a process
    assert processes(recipe_for(corpus, num_proc=3).data, rows=500) == 3


def test_packing_in_several_processes_gives_the_rows_of_one(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    """bfd bins each batch of 1,000 samples on its own: processes pack whole batches each."""
    corpus = write_jsonl(tmp_path / "big.jsonl", texts(2600, seed=5))
    one = run_prepare(recipe_for(corpus, num_proc=1), tokenizer_dir, tmp_path / "one")
    for count in (2, 3):
        several = run_prepare(
            recipe_for(corpus, num_proc=count), tokenizer_dir, tmp_path / f"n{count}"
        )
        assert rows(several) == rows(one), f"{count} processes"


def test_a_tsv_file_is_read_with_tabs_and_any_csv_with_the_recipes_delimiter(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    """A review holding commas stays one text in a .tsv (it was once split at its commas); a
    `;`-separated .csv is read with `data.delimiter`; the cache key follows how a file is read."""
    from launcher.ranks.data import load_raw_splits

    review = "Long, slow, and, in the end, lovely"
    (tmp_path / "train.tsv").write_text(f"text\tlabel\n{review}\t1\nbad\t0\n")
    (tmp_path / "train.csv").write_text(f"text;label\n{review};1\nbad;0\n")

    def recipe(path: str, **data: Any) -> Recipe:
        data = {"files": {"train": str(tmp_path / path)}, "shuffle": False, **data}
        return Recipe.model_validate({"name": "x", "task": "classification", "data": data})

    for name, options in (("train.tsv", {}), ("train.csv", {"delimiter": ";"})):
        split = load_raw_splits(recipe(name, **options).data)["train"]
        assert split.column_names == ["text", "label"], name
        assert split["text"] == [review, "bad"] and split["label"] == [1, 0], name
    tsv = recipe("train.tsv")
    key, description = cache_key(tsv, tokenizer_dir, lambda: load_raw_splits(tsv.data))
    assert description["delimiter"] == "\t"
    comma = recipe("train.tsv", delimiter=",")
    assert cache_key(comma, tokenizer_dir, lambda: load_raw_splits(comma.data))[0] != key
