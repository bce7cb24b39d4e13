"""A mixture of sources in the plan: the summary shows how the sources are mixed and each one's
expected share, local source files become absolute and are checked before launch, and
``--smoke`` keeps the mixture (weights, columns, templates) with generated or shortened sources,
which the real data loading then mixes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_data_rows import data_lines

from launcher.errors import RecipeError
from launcher.plan.build import build_plan
from launcher.recipe.schema import Recipe

SFT_MODEL = {"architecture": "mistral", "config": {"hidden_size": 64, "num_hidden_layers": 2}}


def sft(*sources: dict[str, Any], **data: Any) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "mix",
            "task": "sft",
            "model": SFT_MODEL,
            "tokenizer": {"pretrained": "org/tokenizer"},
            "data": {"sources": list(sources), **data},
        }
    )


def test_the_plan_shows_each_sources_share_of_an_interleaved_mixture(tmp_path: Path) -> None:
    recipe = sft(
        {"files": "chats.jsonl", "weight": 3},
        {"dataset": "org/web", "dataset_config": "en", "weight": 1, "samples": 5000},
        shuffle_seed=7,
    )
    lines = data_lines(build_plan(recipe, tmp_path / "run").summary())
    assert lines[:3] == [
        "mixture of 2 sources, interleaved, drawn by weight (datasets.interleave_datasets, "
        "seed 7; stops when the first source runs out):",
        "75.0%  chats.jsonl [train]",
        "25.0%  org/web:en [train], 5,000 rows drawn at random",
    ]


def test_the_plan_of_a_concatenation_says_the_sizes_decide(tmp_path: Path) -> None:
    recipe = sft({"files": "a.jsonl"}, {"dataset": "org/web", "split": "train[:1%]"})
    assert data_lines(build_plan(recipe, tmp_path / "run").summary())[:3] == [
        "mixture of 2 sources, concatenated: every row of each; the sources' sizes make the "
        "shares:",
        "all rows  a.jsonl [train]",
        "all rows  org/web [train[:1%]]",
    ]
    counted = sft({"files": "a.jsonl", "samples": 100}, {"files": "b.jsonl", "samples": 300})
    lines = data_lines(build_plan(counted, tmp_path / "run").summary())
    assert lines[1:3] == [
        "25.0%  a.jsonl [train], 100 rows drawn at random",
        "75.0%  b.jsonl [train], 300 rows drawn at random",
    ]


def test_source_files_become_absolute_and_missing_ones_are_refused_before_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launcher.backends.run_dir import check_local_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jsonl").write_text('{"text": "a"}\n')
    plan = build_plan(
        sft({"files": "a.jsonl"}, {"files": ["a.jsonl", "gone.jsonl"]}), tmp_path / "run"
    )
    sources = plan.recipe.data.sources or []
    assert sources[0].files == str(tmp_path / "a.jsonl")
    assert sources[1].files == [str(tmp_path / "a.jsonl"), str(tmp_path / "gone.jsonl")]
    with pytest.raises(RecipeError) as refused:
        check_local_paths(plan)
    found = [(p.key, p.message.split(" (")[0]) for p in refused.value.problems]
    assert [problem for problem in found if problem[0].startswith("data")] == [
        ("data.sources.1.files.1", f"{tmp_path / 'gone.jsonl'} does not exist")
    ]


def test_smoke_keeps_the_mixture_with_generated_and_shortened_sources(tmp_path: Path) -> None:
    """A hub source becomes a generated file with its own columns (its template's fields, its
    text column), a local one keeps its first rows; the weights stay, and the real loading mixes
    them by those weights."""
    from launcher.ranks.data import load_raw_splits
    from launcher.ranks.data_mixture import mix_sources
    from launcher.smoke_data import write_smoke_data

    local = tmp_path / "local.jsonl"
    local.write_text("".join(json.dumps({"body": f"local {i}"}) + "\n" for i in range(500)))
    recipe = sft(
        {"dataset": "org/qa", "template": "Q: {question} A: {answer}", "weight": 2},
        {"files": str(local), "text_column": "body", "weight": 1},
        {"dataset": "org/web", "weight": 1, "samples": 10_000},
        eval_fraction=0.1,
    )
    plan = build_plan(recipe, tmp_path / "run", smoke=True, exists=Path.exists)
    count = recipe.smoke.num_samples
    sources = plan.recipe.data.sources or []
    folder = plan.layout.smoke_data_dir
    assert [s.files for s in sources] == [
        str(folder / "source-0.jsonl"),
        str(local),
        str(folder / "source-2.jsonl"),
    ]
    assert [s.weight for s in sources] == [2, 1, 1]
    assert (sources[1].split, sources[2].samples) == (f"train[:{count}]", count)
    assert sources[0].template == "Q: {question} A: {answer}" and sources[0].dataset is None
    note = next(note for note in plan.smoke_notes if note.startswith("data:"))
    assert f"sources 0, 2: {count} generated samples each" in note
    assert f"source 1: at most {count} rows of the local files" in note

    write_smoke_data(plan.recipe, folder)
    first = json.loads((folder / "source-0.jsonl").read_text().splitlines()[0])
    assert set(first) == {"question", "answer"}
    splits = load_raw_splits(plan.recipe.data)
    assert set(splits) == {"train", "eval"}
    rows = mix_sources(plan.recipe.data).rows
    assert rows[0] == count  # the heaviest source runs out first
    assert rows[0] / sum(rows) == pytest.approx(0.5, abs=0.1)
