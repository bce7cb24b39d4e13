"""The names users bring from TrainingArguments, SFTConfig, DeepSpeed and axolotl: accepted where
they mean the recipe key of their section, refused naming the right key where they mean another,
and never answered with a suggestion of a key that means something else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import RECIPES

from launcher.errors import RecipeError
from launcher.recipe.loader import load_recipe
from launcher.recipe.names import KNOWN_NAMES, recipe_key_for
from launcher.recipe.schema import Recipe

SFT = RECIPES / "sft-mistral.yaml"


def problem_for(override: str, recipe: Path = SFT) -> str:
    with pytest.raises(RecipeError) as raised:
        load_recipe(recipe, [override])
    (problem,) = raised.value.problems
    return problem.message


def value_at(recipe: Recipe, key: str) -> object:
    current: object = recipe
    for part in key.split("."):
        current = getattr(current, part)
    return current


def test_synonyms_set_their_key_in_a_file_and_on_the_command_line(tmp_path: Path) -> None:
    recipe = load_recipe(
        SFT,
        [
            "training.num_train_epochs=3",
            "training.per_device_train_batch_size=5",
            "training.lr_scheduler_type=cosine",
            "training.optim=sgd",
            "training.evaluation_strategy=no",
        ],
    )
    training = recipe.training
    assert (training.num_epochs, training.per_device_batch_size) == (3.0, 5)
    assert (training.lr_scheduler, training.optimizer) == ("cosine", "sgd")
    # In a file that inherits: the synonym in the child wins over the base's own name.
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {SFT}\ntraining:\n  micro_batch_size: 7\n")
    assert load_recipe(child).training.per_device_batch_size == 7
    # ... and over a synonym given on the command line, the command line wins.
    assert (
        load_recipe(child, ["training.per_device_batch_size=9"]).training.per_device_batch_size == 9
    )


def test_one_source_setting_a_key_under_both_names_is_refused(tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"
    both.write_text(f"base: {SFT}\ntraining:\n  num_epochs: 1\n  num_train_epochs: 2\n")
    with pytest.raises(RecipeError) as raised:
        load_recipe(both)
    (problem,) = raised.value.problems
    assert problem.key == "training.num_train_epochs"
    assert "set twice, also as `training.num_epochs`" in problem.message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("training.save_steps=5", "checkpointing.every_steps"),
        ("training.save_total_limit=2", "checkpointing.keep"),
        ("training.bf16=true", "training.precision"),
        ("training.max_seq_length=128", "data.max_length"),
        ("training.dataset_text_field=text", "data.text_column"),
        ("distributed.ddp_timeout=1800", "distributed.timeout_min"),
        ("model.model_name_or_path=x", "model.pretrained"),
        ("training.sequence_len=512", "data.max_length"),
    ],
)
def test_another_tools_name_for_a_key_elsewhere_names_that_key(override: str, key: str) -> None:
    assert f"this is `{key}` here" in problem_for(override)


def trainer_fields_covered() -> list[tuple[str, str]]:
    return [
        (name, known.key)
        for known in KNOWN_NAMES
        for name in known.trainer
        if name.isidentifier() and f"training.{name}" != known.key
    ]


# Values valid for the key a synonym sets.
SYNONYM_VALUES = {"lr_scheduler": "cosine", "optimizer": "sgd", "eval_strategy": "no"}


@pytest.mark.parametrize(("name", "key"), trainer_fields_covered())
def test_each_trainer_name_the_recipe_covers_leads_to_its_key(name: str, key: str) -> None:
    """Written where Trainer arguments go (`training.NAME`), each name the table covers sets its
    key or is refused naming it; no suggestion points to a key with another meaning
    (`per_device_train_batch_size` once suggested `per_device_eval_batch_size`, `save_steps`
    suggested `max_steps`)."""
    known = next(k for k in KNOWN_NAMES if k.key == key)
    if key.startswith("training.") and name in known.synonyms:
        value = SYNONYM_VALUES.get(key.split(".")[1], "2")
        recipe = load_recipe(SFT, [f"training.{name}={value}"])
        assert str(value_at(recipe, key)) in (value, "2.0")
        return
    assert f"this is `{key}` here" in problem_for(f"training.{name}=1")


def test_every_other_trainer_field_is_pointed_to_training_extra() -> None:
    """Each real TrainingArguments field without a recipe key: `training.NAME` suggests
    `training.extra.NAME` and no look-alike key."""
    from transformers import TrainingArguments

    skipped = 0
    for field in dataclasses.fields(TrainingArguments):
        name = field.name
        if name.startswith("_") or name in Recipe.model_fields["training"].annotation.model_fields:
            continue
        if recipe_key_for(name) is not None:
            skipped += 1  # covered above
            continue
        message = problem_for(f"training.{name}=1")
        assert f"pass it as `training.extra.{name}`" in message, message
        assert "did you mean" not in message
    assert skipped >= 10  # the covered names are many; the loop above saw the others
