"""A mixture of sources (``launcher.recipe.data_sources``): the share each source is expected to
give, how a source is read alone, and the plan-time refusals of mixtures that cannot work, each
naming its key."""

from __future__ import annotations

from typing import Any

import pytest

from launcher.recipe.checks import check_recipe
from launcher.recipe.data_sources import (
    expected_shares,
    mix_mode,
    probabilities,
    source_files,
    source_label,
    source_section,
)
from launcher.recipe.schema import DataSection, Recipe

A, B = {"files": "a.jsonl"}, {"dataset": "org/b", "dataset_config": "en", "split": "train[:10%]"}


def section(*sources: dict[str, Any], **data: Any) -> DataSection:
    return DataSection.model_validate({"sources": list(sources), **data})


def problems(*sources: dict[str, Any], task: str = "sft", **data: Any) -> list[tuple[str, str]]:
    recipe = Recipe.model_validate(
        {
            "name": "mix",
            "task": task,
            "model": {"architecture": "bert" if task != "sft" else "mistral"},
            "tokenizer": {"pretrained": "org/tokenizer"},
            "data": {"sources": list(sources), **data},
        }
    )
    return [(key, message) for key, message in check_recipe(recipe) if key.startswith("data")]


# --- the arithmetic -----------------------------------------------------------------------------


def test_weights_are_normalised_into_probabilities_and_shares() -> None:
    data = section({**A, "weight": 7}, {**B, "weight": 3})
    assert mix_mode(data) == "interleave"
    assert probabilities(data) == pytest.approx([0.7, 0.3])
    assert expected_shares(data) == pytest.approx([0.7, 0.3])
    three = section({**A, "weight": 1}, {**B, "weight": 1}, {**A, "weight": 2})
    assert expected_shares(three) == pytest.approx([0.25, 0.25, 0.5])


def test_interleave_without_weights_takes_one_row_of_each_in_turn() -> None:
    data = section(A, B, A, mix="interleave")
    assert probabilities(data) is None
    assert expected_shares(data) == pytest.approx([1 / 3] * 3)


def test_concatenated_shares_are_known_only_from_row_counts() -> None:
    data = section(A, B)
    assert mix_mode(data) == "concatenate"  # `auto` without weights
    assert expected_shares(data) == [None, None]
    counted = section({**A, "samples": 300}, {**B, "samples": 100})
    assert expected_shares(counted) == pytest.approx([0.75, 0.25])
    assert expected_shares(section({**A, "samples": 300}, B)) == [None, None]


def test_a_source_is_read_as_a_single_dataset_with_the_sections_defaults() -> None:
    data = section(
        {"files": ["x/a.jsonl", "y/b.jsonl"], "split": "train[:50]", "text_column": "body"},
        {"dataset": "org/qa", "columns": {"prompt": "question"}},
        template="{q}",
        columns={"messages": "chat"},
        eval_fraction=0.1,
        train_samples=10,
    )
    first = source_section(data, data.sources[0])  # type: ignore[index]
    assert first.files == {"train": ["x/a.jsonl", "y/b.jsonl"]}
    assert (first.train_split, first.text_column, first.dataset) == ("train[:50]", "body", None)
    assert (first.template, first.columns) == ("{q}", {"messages": "chat"})  # the section's
    assert (first.eval_fraction, first.train_samples, first.sources) == (0.0, None, None)
    second = source_section(data, data.sources[1])  # type: ignore[index]
    assert (second.dataset, second.files, second.text_column) == ("org/qa", None, "text")
    assert second.columns == {"prompt": "question"}  # its own
    assert source_label(data.sources[0]) == "a.jsonl, b.jsonl [train[:50]]"  # type: ignore[index]
    assert source_label(section(B).sources[0]) == "org/b:en [train[:10%]]"  # type: ignore[index]
    assert source_files(data) == [
        ("data.sources.0.files.0", "x/a.jsonl"),
        ("data.sources.0.files.1", "y/b.jsonl"),
    ]


# --- plan-time refusals -------------------------------------------------------------------------


def test_a_well_formed_mixture_passes() -> None:
    assert problems({**A, "weight": 0.7}, {**B, "weight": 0.3}, eval_fraction=0.05) == []
    assert problems(A, {**B, "samples": 100}, mix="concatenate") == []
    assert problems(A, B, mix="interleave", mix_stopping="all_exhausted") == []


@pytest.mark.parametrize(
    ("sources", "data", "key", "says"),
    [
        ([A], {"dataset": "org/x"}, "data.sources", "set together with `data.dataset`"),
        ([A], {"files": {"train": "t.txt"}}, "data.sources", "set together with `data.files`"),
        ([A], {"train_split": "train[:10]"}, "data.train_split", "data.sources.0.split"),
        ([A], {"eval_split": "test"}, "data.eval_split", "set data.eval_fraction instead"),
        ([A], {"format": "csv"}, "data.format", "each source sets its own"),
        ([{}], {}, "data.sources.0", "set `dataset` (hub id) or `files`"),
        ([{**A, **B}], {}, "data.sources.0.files", "set together with `dataset`"),
        ([{"files": []}], {}, "data.sources.0.files", "an empty list"),
        ([{**B, "format": "csv"}], {}, "data.sources.0.format", "a hub dataset has its own"),
        ([{**A, "dataset_config": "en"}], {}, "data.sources.0.dataset_config", "set `dataset`"),
        (
            [{**A, "weight": 1}, B],
            {},
            "data.sources.1.weight",
            "required: other sources have weights",
        ),
        (
            [{**A, "weight": 1}, B],
            {"mix": "concatenate"},
            "data.sources.0.weight",
            "keeps every row of each source",
        ),
        ([{**A, "template": "{q"}], {}, "data.sources.0.template", "not a valid format string"),
    ],
)
def test_mixtures_that_cannot_work_are_refused_at_their_key(
    sources: list[dict[str, Any]], data: dict[str, Any], key: str, says: str
) -> None:
    found = problems(*sources, **data)
    assert any(k == key and says in message for k, message in found), found


def test_task_rules_of_a_source() -> None:
    assert ("data.sources.0.columns", "names the columns SFT reads; task 'mlm' reads text") in (
        problems({**A, "columns": {"prompt": "q"}}, task="mlm")
    )
    found = problems({**A, "template": "{a}"}, task="token_classification")
    assert (
        "data.sources.0.template",
        "token classification reads words and tags (data.tokens_column, "
        "data.tags_column), not a text a template could make",
    ) in (found)
    assert any(key == "data.labels" and "mixture" in message for key, message in found)


def test_a_recipe_without_any_data_names_sources_too() -> None:
    recipe = Recipe.model_validate(
        {"name": "x", "task": "sft", "model": {"architecture": "mistral"}}
    )
    assert ("data", "set `dataset` (hub id), `files` (local files by split) or `sources`") in (
        check_recipe(recipe)
    )
