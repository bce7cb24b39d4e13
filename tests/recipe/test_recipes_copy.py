"""``launcher recipes --copy NAME DEST.yaml`` (launcher/recipe/shipped.py), and what ``launcher
plan`` shows a recipe with ``base:`` changes from its base (launcher/recipe/changes.py).

In-process through the real command line: a copy plans as its shipped recipe does and shows no
changes; an edit shows exactly that edit; bad input is one line, exit 2, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RECIPES, cli

from launcher.recipe.changes import BaseChanges, changes_from_base
from launcher.recipe.loader import load_recipe
from launcher.recipe.yaml_data import load_yaml

SHIPPED = sorted(path.stem for path in RECIPES.glob("*.yaml"))


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own, away from the repository's recipes."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def summary_line(out: str) -> str:
    """The plan summary's line about the base (right after the `recipe` line)."""
    lines = out.splitlines()
    assert lines[0].startswith("recipe "), out
    return lines[1].strip()


def refused(code: int, out: str, err: str, words: str) -> None:
    assert code == 2, err
    assert words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


@pytest.mark.parametrize("name", SHIPPED)
def test_a_copy_plans_as_the_shipped_recipe_with_no_changes(cwd: Path, name: str) -> None:
    code, out, err = cli("recipes", "--copy", name, "my.yaml")
    assert code == 0, err
    assert "wrote my.yaml" in out
    copy = cwd / "my.yaml"
    text = copy.read_text()
    # The shipped text with its comments, under `base: NAME`; the shipped recipe's own `base:`
    # is inherited through the new one.
    shipped = load_yaml((RECIPES / f"{name}.yaml").read_text())
    shipped.pop("base", None)
    assert load_yaml(text) == {"base": name, **shipped}
    assert text.startswith("# A copy of the shipped recipe") and "\n# launcher " in text
    assert f"recipes/{name}.yaml" not in text  # its commands run the copy
    assert load_recipe(copy) == load_recipe(RECIPES / f"{name}.yaml")

    for smoke in ((), ("--smoke",)):
        code, out, err = cli("plan", "my.yaml", *smoke)
        assert code == 0, err
        assert summary_line(out) == f"no changes from base {name} yet"


def test_a_copy_in_another_folder_plans(cwd: Path) -> None:
    elsewhere = cwd.parent / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    code, _, err = cli("recipes", "--copy", "sft-mistral-7b-zero3", str(elsewhere / "z3.yml"))
    assert code == 0, err
    code, out, err = cli("plan", str(elsewhere / "z3.yml"), "--smoke")
    assert code == 0, err
    assert summary_line(out) == "no changes from base sft-mistral-7b-zero3 yet"


def test_a_copy_beside_a_folder_named_as_the_recipe_names_the_shipped_file(
    cwd: Path,
) -> None:
    # `base: sft-mistral` would find ./sft-mistral (a folder: an exported model, say) first.
    (cwd / "sft-mistral").mkdir()
    assert cli("recipes", "--copy", "sft-mistral", "my.yaml")[0] == 0
    assert load_yaml((cwd / "my.yaml").read_text())["base"] == str(RECIPES / "sft-mistral.yaml")
    code, out, err = cli("plan", "my.yaml")
    assert code == 0, err
    assert summary_line(out).startswith("no changes from base ")


def test_an_edit_shows_exactly_that_change(cwd: Path) -> None:
    assert cli("recipes", "--copy", "sft-mistral", "my.yaml")[0] == 0
    copy = cwd / "my.yaml"
    text = copy.read_text()
    assert text.count("learning_rate: 1.0e-4") == 1
    copy.write_text(text.replace("learning_rate: 1.0e-4", "learning_rate: 3e-4"))
    code, out, err = cli("plan", "my.yaml", "training.max_steps=10")
    assert code == 0, err
    # Overrides are listed on the recipe line, not counted as changes of the file.
    assert out.splitlines()[0].endswith("my.yaml + overrides: training.max_steps=10")
    assert summary_line(out) == (
        "changed from base sft-mistral: training.learning_rate 0.0001 -> 0.0003"
    )

    # A key deleted from the copy keeps the base's value: no change.
    copy.write_text(copy.read_text().replace("  pad_token: eos\n", ""))
    code, out, err = cli("plan", "my.yaml")
    assert summary_line(out) == (
        "changed from base sft-mistral: training.learning_rate 0.0001 -> 0.0003"
    )


def test_changes_from_base_of_a_variant() -> None:
    changes = changes_from_base(RECIPES / "sft-mistral-7b-zero3.yaml")
    assert changes is not None and changes.base == "sft-mistral.yaml"
    keys = [key for key, _, _ in changes.changes]
    assert "model.config" in keys and not any(k.startswith("model.config.") for k in keys)
    assert ("distributed.zero_stage", 0, 3) in changes.changes
    assert changes.describe().startswith(f"changed from base sft-mistral.yaml, {len(keys)} keys: ")
    assert changes_from_base(RECIPES / "sft-mistral.yaml") is None  # no base: no line


def test_changes_from_a_partial_base(tmp_path: Path) -> None:
    """A base with shared settings only (no recipe alone): the keys as written are compared."""
    (tmp_path / "common.yaml").write_text("training: {seed: 7, max_steps: 5}\n")
    (tmp_path / "r.yaml").write_text(
        "base: common.yaml\nname: r\ntask: mlm\nmodel: {architecture: bert}\n"
        "data: {files: {train: x.txt}, format: text}\ntraining: {max_steps: 6}\n"
    )
    changes = changes_from_base(tmp_path / "r.yaml")
    assert changes is not None
    keys = [key for key, _, _ in changes.changes]
    assert ("training.max_steps", 5, 6) in changes.changes and "training.seed" not in keys


def test_describe_shows_values_as_yaml_would() -> None:
    described = BaseChanges(
        "b",
        (
            ("data.dataset", "org/name", "my data"),
            ("data.dataset_config", "2024", None),
            ("data.labels", ["a", "b"], ["a"]),
            ("training.bf16", True, False),
        ),
    ).describe()
    assert described == (
        'changed from base b: data.dataset org/name -> "my data", data.dataset_config "2024" -> '
        'null, data.labels ["a", "b"] -> ["a"], training.bf16 true -> false'
    )


def test_unknown_recipe_lists_the_shipped_ones(cwd: Path) -> None:
    code, out, err = cli("recipes", "--copy", "sft-mistrl", "my.yaml")
    refused(code, out, err, "'sft-mistrl' is not a shipped recipe; did you mean `sft-mistral`?")
    assert f"shipped: {', '.join(SHIPPED)}" in err
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    ("destination", "words"),
    [
        ("taken.yaml", "taken.yaml: already exists and is not overwritten"),
        ("a-folder", "a-folder: this is a folder; name the file for the recipe"),
        ("missing/my.yaml", "missing/my.yaml: no folder missing; name a file in a folder"),
        ("taken.yaml/my.yaml", "taken.yaml/my.yaml: taken.yaml is a file, not a folder; "),
        ("my.txt", "my.txt: a recipe file's name ends in .yaml or .yml (`launcher plan NAME` "),
        ("/proc/my.yaml", "/proc/my.yaml: cannot write the recipe here ("),
    ],
)
def test_bad_destination_is_refused_and_nothing_written(
    cwd: Path, destination: str, words: str
) -> None:
    (cwd / "taken.yaml").write_text("mine\n")
    (cwd / "a-folder").mkdir()
    before = sorted(cwd.rglob("*"))
    code, out, err = cli("recipes", "--copy", "sft-mistral", destination)
    refused(code, out, err, f"error: {words}")
    assert sorted(cwd.rglob("*")) == before
    assert (cwd / "taken.yaml").read_text() == "mine\n"


def test_copy_needs_both_a_name_and_a_file(cwd: Path) -> None:
    code, out, err = cli("recipes", "--copy", "sft-mistral")
    refused(code, out, err, "--copy sft-mistral: name the file to write")
    code, out, err = cli("recipes", "my.yaml")
    refused(code, out, err, "my.yaml: which recipe goes there? launcher recipes --copy NAME")
    assert list(cwd.iterdir()) == []
