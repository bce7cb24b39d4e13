"""A mixture of sources (``data.sources``) read by the real ``load_raw_splits``: weights become the
shares of the training rows, the seed makes the mixture repeatable, concatenation keeps every
row, and every part of the mixture enters the data cache key.

Real parts: ``datasets`` reading JSON lines files written to ``tmp_path``, its
``interleave_datasets`` and ``concatenate_datasets``, the launcher's cache key.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from launcher.ranks.data import load_raw_splits
from launcher.ranks.data_cache import cache_key
from launcher.ranks.data_mixture import MixtureError, mix_sources
from launcher.recipe.schema import Recipe

ROWS = 2000


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two files of 2,000 rows whose texts say where they come from (`a 17`, `b 17`), and one
    whose text is in another column."""
    folder = tmp_path_factory.mktemp("mix")
    return {
        "a": write_jsonl(folder / "a.jsonl", [{"text": f"a {i}"} for i in range(ROWS)]),
        "b": write_jsonl(folder / "b.jsonl", [{"text": f"b {i}", "id": i} for i in range(ROWS)]),
        "c": write_jsonl(folder / "c.jsonl", [{"body": f"c {i}"} for i in range(50)]),
    }


def mixture(*sources: dict[str, Any], **data: Any) -> Recipe:
    fields = {"sources": list(sources), "max_length": 32, **data}
    return Recipe.model_validate({"name": "mix", "task": "sft", "data": fields})


def origins(split: Any) -> Counter[str]:
    return Counter(text.split()[0] for text in split["text"])


def test_weights_give_their_shares_of_the_rows(files: dict[str, str]) -> None:
    """0.7 / 0.3 of equal files: the mixture stops when `a` runs out (first_exhausted), after
    about 2,000 / 0.7 rows, 70% from `a` and 30% from `b` (within 2 points)."""
    recipe = mixture({"files": files["a"], "weight": 0.7}, {"files": files["b"], "weight": 0.3})
    train = load_raw_splits(recipe.data)["train"]
    counts = origins(train)
    assert counts["a"] == ROWS  # the first source to run out: every one of its rows, once
    assert counts["a"] / len(train) == pytest.approx(0.7, abs=0.02)
    assert counts["b"] / len(train) == pytest.approx(0.3, abs=0.02)
    assert train.column_names == ["text"]  # `b`'s id column is not read by the task
    # The logged counts are the rows each source gave to the split.
    mixed = mix_sources(recipe.data)
    assert mixed.rows == [counts["a"], counts["b"]]


def test_weights_are_relative_and_the_seed_repeats_the_mixture(files: dict[str, str]) -> None:
    def texts(weights: tuple[float, float], seed: int) -> list[str]:
        recipe = mixture(
            {"files": files["a"], "weight": weights[0]},
            {"files": files["b"], "weight": weights[1]},
            shuffle_seed=seed,
        )
        return load_raw_splits(recipe.data)["train"]["text"]

    first = texts((7, 3), seed=1)
    assert texts((7, 3), seed=1) == first
    assert texts((0.7, 0.3), seed=1) == first  # only the ratio of the weights counts
    assert texts((7, 3), seed=2) != first
    even = Counter(text.split()[0] for text in texts((1, 1), seed=1))
    assert even["a"] / sum(even.values()) == pytest.approx(0.5, abs=0.02)


def test_concatenate_keeps_every_row_and_samples_cap_a_source(files: dict[str, str]) -> None:
    recipe = mixture({"files": files["a"]}, {"files": files["b"]})
    assert recipe.data.mix == "auto"  # no weights: concatenated
    assert origins(load_raw_splits(recipe.data)["train"]) == {"a": ROWS, "b": ROWS}
    capped = mixture({"files": files["a"]}, {"files": files["b"], "samples": 100})
    assert origins(load_raw_splits(capped.data)["train"]) == {"a": ROWS, "b": 100}
    too_many = mixture({"files": files["a"]}, {"files": files["b"], "samples": ROWS + 1})
    with pytest.raises(MixtureError, match=r"data\.sources\.1\.samples: 2,001 rows asked for"):
        load_raw_splits(too_many.data)


def test_all_exhausted_repeats_the_smaller_share_until_every_source_ran_out(
    files: dict[str, str],
) -> None:
    recipe = mixture(
        {"files": files["a"], "weight": 0.5},
        {"files": files["c"], "text_column": "body", "weight": 0.5},
        mix_stopping="all_exhausted",
    )
    counts = origins(load_raw_splits(recipe.data)["train"])
    assert counts["a"] == ROWS and counts["c"] > 50  # `c`'s 50 rows repeat
    assert counts["c"] / (counts["a"] + counts["c"]) == pytest.approx(0.5, abs=0.05)


def test_eval_fraction_is_held_out_of_the_mixture(files: dict[str, str]) -> None:
    recipe = mixture(
        {"files": files["a"], "weight": 0.7},
        {"files": files["b"], "weight": 0.3},
        eval_fraction=0.1,
    )
    splits = load_raw_splits(recipe.data)
    total = len(splits["train"]) + len(splits["eval"])
    assert len(splits["eval"]) == pytest.approx(0.1 * total, abs=1)
    share = origins(splits["eval"])["a"] / len(splits["eval"])
    assert share == pytest.approx(0.7, abs=0.06)  # a random tenth of the mixture


def test_a_source_text_column_and_template_become_the_task_column(
    files: dict[str, str], tmp_path: Path
) -> None:
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"q": "why", "a": "because"}] * 10)
    recipe = mixture(
        {"files": files["c"], "text_column": "body"},
        {"files": qa, "template": "Q: {q} A: {a}"},
        shuffle=False,
    )
    train = load_raw_splits(recipe.data)["train"]
    assert train.column_names == ["text"]
    assert train["text"][0] == "c 0" and train["text"][-1] == "Q: why A: because"


def test_sources_without_a_common_column_are_refused_naming_their_columns(
    files: dict[str, str], tmp_path: Path
) -> None:
    chats = write_jsonl(
        tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]
    )
    recipe = mixture({"files": files["a"]}, {"files": chats})
    with pytest.raises(MixtureError, match=r"share none of .*data\.sources\.1 \(chat\.jsonl"):
        load_raw_splits(recipe.data)


def test_messages_inferred_in_another_key_order_are_cast_to_one_type(tmp_path: Path) -> None:
    """Two JSON files whose messages list their keys in another order infer two struct types;
    the mixture casts the second to the first's."""
    one = [{"messages": [{"role": "user", "content": f"one {i}"}]} for i in range(20)]
    two = [{"messages": [{"content": f"two {i}", "role": "user"}]} for i in range(20)]
    recipe = mixture(
        {"files": write_jsonl(tmp_path / "one.jsonl", one), "weight": 1},
        {"files": write_jsonl(tmp_path / "two.jsonl", two), "weight": 1},
    )
    train = load_raw_splits(recipe.data)["train"]
    assert train.column_names == ["messages"]
    contents = {row["messages"][0]["content"].split()[0] for row in train}
    assert contents == {"one", "two"}
    assert list(train[0]["messages"][0]) == ["role", "content"]


def test_every_part_of_the_mixture_enters_the_cache_key(
    files: dict[str, str], tmp_path: Path
) -> None:
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    (tokenizer_dir / "tokenizer.json").write_text("{}")

    def key(*sources: dict[str, Any], **data: Any) -> str:
        recipe = mixture(*sources, **data)
        return cache_key(recipe, tokenizer_dir, lambda: load_raw_splits(recipe.data))[0]

    a, b = {"files": files["a"], "weight": 0.7}, {"files": files["b"], "weight": 0.3}
    base = key(a, b)
    assert key(a, b) == base
    changed = [
        key(a, {**b, "weight": 0.4}),
        key({**a, "files": files["c"], "text_column": "body"}, b),
        key(a, {**b, "samples": 10}),
        key(a, {**b, "split": "train[:100]"}),
        key(a, {**b, "template": "{text}!"}),
        key(a, b, mix_stopping="all_exhausted"),
        key(a, b, shuffle_seed=7),
        key(b, a),
        key({"files": files["a"]}, {"files": files["b"]}),  # concatenated
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    copy = Path(files["a"]).with_name("copy-of-a.jsonl")
    copy.write_bytes(Path(files["a"]).read_bytes())
    assert key({**a, "files": str(copy)}, b) == base  # keyed by content, not by path
