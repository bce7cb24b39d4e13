"""The README's recipe reference is generated from the schema and must not drift from it."""

from __future__ import annotations

from conftest import REPO

from launcher.recipe.reference import END, START, reference_markdown
from launcher.recipe.schema import Recipe


def test_readme_reference_matches_the_schema() -> None:
    readme = (REPO / "README.md").read_text()
    inside = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert inside == reference_markdown(), (
        "README.md's recipe reference is out of date: run `make reference` and commit the result"
    )


def test_reference_lists_every_field() -> None:
    table = reference_markdown()
    for section in Recipe.model_fields:
        assert f"`{section}`" in table
    assert "`training.per_device_batch_size`" in table
    assert "`tokenizer.train.limit_alphabet`" in table


def test_readme_names_table_matches_the_names_the_loader_uses() -> None:
    from launcher.recipe.reference import NAMES_END, NAMES_START, names_markdown

    readme = (REPO / "README.md").read_text()
    inside = readme.split(NAMES_START, 1)[1].split(NAMES_END, 1)[0].strip()
    assert inside == names_markdown(), "README.md's names table is out of date: `make reference`"
    assert "| `training.num_epochs` | `num_train_epochs` | `num_epochs` |" in inside
