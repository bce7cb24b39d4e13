"""Recipe files: schema, loading, ``base:`` inheritance, overrides, error messages, the CLI edge.

Error messages are frozen as exact strings: they are the user interface of a bad recipe. When one
changes on purpose, change it here too and read the new text as a user would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RECIPES
from pydantic import BaseModel

from launcher.cli import main
from launcher.errors import RecipeError, RecipeProblem
from launcher.recipe.loader import load_recipe
from launcher.recipe.schema import Recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "recipes").glob("*.yaml"))

# The smallest recipe that passes every check; tests add or break one thing at a time.
VALID = """\
name: tiny
task: sft
model:
  architecture: mistral
tokenizer:
  pretrained: org/tokenizer
data:
  dataset: org/corpus
"""

TOP_LEVEL_KEYS = (
    "checkpointing, data, description, distributed, model, name, resources, secrets, smoke, task, "
    "tokenizer, tracking, training"
)
TRAINING_KEYS = (
    "dataloader_num_workers, eval_steps, eval_strategy, extra, gradient_accumulation_steps, "
    "gradient_checkpointing, greater_is_better, learning_rate, load_best_model_at_end, "
    "logging_steps, lr_scheduler, max_grad_norm, max_steps, metric_for_best_model, num_epochs, "
    "optimizer, per_device_batch_size, per_device_eval_batch_size, precision, report_to, seed, warmup_ratio, "
    "warmup_steps, weight_decay"
)
HEAVY_MODULES = {
    "torch", "transformers", "deepspeed", "bitsandbytes", "submitit", "wandb", "mlflow",
}  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own, so that problems name files as `bad.yaml`."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every problem ``load_recipe`` reports, as the user reads them; fails if it loads."""
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, overrides)
    assert all(isinstance(p, RecipeProblem) for p in caught.value.problems)
    return [str(p) for p in caught.value.problems]


# --- shipped recipes -----------------------------------------------------------------------------


def test_six_recipes_are_shipped() -> None:
    assert [p.stem for p in SHIPPED] == [
        "classification-imdb",
        "mlm-scratch",
        "ner",
        "sft-mistral-7b-zero3",
        "sft-mistral",
        "sft-qlora-7b",
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipe_loads(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.description


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipe_opens_with_the_command_that_runs_it(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# launcher "), first
    assert path.name in first, f"{first!r} does not run {path.name}"


def test_child_recipe_can_clear_the_base_model_config() -> None:
    recipe = load_recipe(REPO / "recipes" / "sft-mistral-7b-zero3.yaml")
    assert recipe.model.config == {}


# --- schema --------------------------------------------------------------------------------------

REQUIRED = {"name", "task", "tokenizer.train.algorithm"}


def schema_fields(model: type[BaseModel] = Recipe, prefix: str = "") -> list[tuple[str, Any]]:
    """Every field of the schema, sections included, as (dotted path, FieldInfo)."""
    found = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        found.append((path, info))
        for arg in getattr(info.annotation, "__args__", (info.annotation,)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                found += schema_fields(arg, f"{path}.")
    return found


def test_schema_walk_reaches_nested_sections() -> None:
    paths = {path for path, _ in schema_fields()}
    assert {"training.learning_rate", "tokenizer.train.vocab_size", "smoke.tiny_config"} <= paths


@pytest.mark.parametrize("path,info", schema_fields(), ids=[p for p, _ in schema_fields()])
def test_schema_field_has_description_and_default(path: str, info: Any) -> None:
    assert info.description and info.description.strip(), f"{path} has no description"
    assert info.is_required() == (path in REQUIRED), f"{path}: default expected: {info}"


# --- overrides -----------------------------------------------------------------------------------


def test_overrides_are_typed_by_the_schema(folder: Path) -> None:
    recipe = load_recipe(
        write(folder / "r.yaml", VALID),
        [
            "training.learning_rate=3e-4",  # a string to YAML 1.1; the schema makes it a float
            "distributed.strategy=deepspeed",
            "distributed.zero_stage=2",
            "data.labels=[a,b]",
            "training.gradient_checkpointing=true",
            "tokenizer.pad_token=null",
        ],
    )
    assert recipe.training.learning_rate == 3e-4
    assert type(recipe.training.learning_rate) is float
    assert recipe.distributed.zero_stage == 2
    assert type(recipe.distributed.zero_stage) is int
    assert recipe.data.labels == ["a", "b"]
    assert recipe.training.gradient_checkpointing is True
    assert recipe.tokenizer.pad_token is None


def test_override_sets_a_nested_entry_of_a_free_form_mapping(folder: Path) -> None:
    text = VALID.replace("  dataset: org/corpus\n", "  files: {train: a.txt, validation: b.txt}\n")
    recipe = load_recipe(write(folder / "r.yaml", text), ["data.files.train=x.txt"])
    assert recipe.data.files == {"train": "x.txt", "validation": "b.txt"}
    recipe = load_recipe(
        write(folder / "r.yaml", VALID), ["data.dataset=null", "data.files.train=x.txt"]
    )
    assert recipe.data.files == {"train": "x.txt"}


def test_override_of_an_unknown_key_names_the_command_line_and_suggests(folder: Path) -> None:
    assert problems(write(folder / "r.yaml", VALID), ["training.learnig_rate=1"]) == [
        "command line: training.learnig_rate: unknown key; did you mean `learning_rate`? "
        f"allowed here: {TRAINING_KEYS}"
    ]


def test_malformed_overrides_are_all_reported(folder: Path) -> None:
    assert problems(write(folder / "r.yaml", VALID), ["noequals", "=3", "a..b=1"]) == [
        "command line: noequals: 'noequals': overrides look like a.b=value",
        "command line: =3: '=3': overrides look like a.b=value",
        "command line: a..b: 'a..b=1': overrides look like a.b=value",
    ]


def test_bad_override_value_names_the_command_line(folder: Path) -> None:
    assert problems(write(folder / "r.yaml", VALID), ["training.learning_rate=-1"]) == [
        "command line: training.learning_rate: -1: input should be greater than 0"
    ]


def test_override_of_a_string_field_keeps_the_text(folder: Path) -> None:
    recipe = load_recipe(
        write(folder / "r.yaml", VALID),
        ["tokenizer.pad_token=[PAD]", "data.text_column=yes", "data.dataset_config=2024"],
    )
    assert recipe.tokenizer.pad_token == "[PAD]"
    assert recipe.data.text_column == "yes"
    assert recipe.data.dataset_config == "2024"


def test_exponent_floats_in_model_config_are_numbers(folder: Path) -> None:
    text = VALID.replace("  architecture: mistral\n", "  architecture: mistral\n  config:\n")
    text = text.replace("  config:\n", "  config:\n    rms_norm_eps: 1e-6\n")
    recipe = load_recipe(write(folder / "r.yaml", text), ["model.config.rope_theta=1e6"])
    assert recipe.model.config == {"rms_norm_eps": 1e-6, "rope_theta": 1e6}


def test_booleans_are_yaml_1_2_so_no_is_a_word(folder: Path) -> None:
    """YAML 1.1 reads no/yes/on/off as booleans; `checkpointing.strategy: no`, a documented value,
    then arrived as False and was refused. Only true and false are booleans."""
    text = VALID + "checkpointing: {strategy: no}\ntraining: {eval_strategy: no}\n"
    recipe = load_recipe(write(folder / "r.yaml", text), ["data.text_column=on"])
    assert (recipe.checkpointing.strategy, recipe.training.eval_strategy) == ("no", "no")
    assert recipe.data.text_column == "on"
    flags = load_recipe(folder / "r.yaml", ["training.gradient_checkpointing=true"])
    assert flags.training.gradient_checkpointing is True


# --- inheritance ---------------------------------------------------------------------------------


def test_child_inherits_and_overrides_with_base_relative_to_its_folder(folder: Path) -> None:
    write(
        folder / "recipes" / "common" / "parent.yaml", VALID + "training: {seed: 7, max_steps: 5}\n"
    )
    child = write(
        folder / "recipes" / "child.yaml",
        "base: common/parent.yaml\nname: child\ntraining: {max_steps: 9}\n",
    )
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.task == "sft"
    assert recipe.training.seed == 7
    assert recipe.training.max_steps == 9


def test_three_level_chain(folder: Path) -> None:
    write(folder / "a.yaml", VALID + "training: {seed: 1, max_steps: 1, warmup_steps: 1}\n")
    write(folder / "sub" / "b.yaml", "base: ../a.yaml\ntraining: {max_steps: 2, warmup_steps: 2}\n")
    write(folder / "sub" / "c.yaml", "base: b.yaml\nname: c\ntraining: {warmup_steps: 3}\n")
    training = load_recipe(folder / "sub" / "c.yaml").training
    assert (training.seed, training.max_steps, training.warmup_steps) == (1, 2, 3)


def test_inheritance_cycle(folder: Path) -> None:
    write(folder / "a.yaml", "base: b.yaml\n" + VALID)
    write(folder / "b.yaml", "base: a.yaml\n")
    assert problems("a.yaml") == ["a.yaml: base: inheritance cycle: a.yaml -> b.yaml -> a.yaml"]
    write(folder / "self.yaml", "base: self.yaml\n" + VALID)
    assert problems("self.yaml") == ["self.yaml: base: inheritance cycle: self.yaml -> self.yaml"]


def test_base_must_be_a_path(folder: Path) -> None:
    write(folder / "r.yaml", "base: [a.yaml]\n" + VALID)
    assert problems("r.yaml") == [
        "r.yaml: base: ['a.yaml']: must be a recipe file's path or a shipped recipe's name"
    ]


def test_base_takes_a_shipped_recipes_name_as_the_command_line_does(folder: Path) -> None:
    write(folder / "mine.yaml", "base: mlm-scratch\ntraining: {learning_rate: 1.0e-5}\n")
    recipe = load_recipe(folder / "mine.yaml", [])
    shipped = load_recipe(RECIPES / "mlm-scratch.yaml", [])
    assert recipe.training.learning_rate == 1e-5 and recipe.task == shipped.task == "mlm"
    assert recipe.model == shipped.model and recipe.data == shipped.data
    # A name that is neither a file beside the recipe nor a shipped recipe is reported missing.
    write(folder / "other.yaml", "base: no-such-recipe\n" + VALID)
    assert problems("other.yaml") == [
        "other.yaml: base: 'no-such-recipe': no such file, nor a shipped recipe "
        "(`launcher recipes` lists them)"
    ]


# Each level sets the same keys; the later source must win, key by key.
PRECEDENCE_LEVELS = [
    ("defaults", 5e-5, 42, {}),
    ("base", 1e-3, 1, {"bos_token_id": 1, "eos_token_id": 1}),
    ("recipe", 2e-3, 2, {"bos_token_id": 1, "eos_token_id": 2}),
    ("overrides", 3e-3, 3, {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}),
]


@pytest.mark.parametrize(
    "level", range(len(PRECEDENCE_LEVELS)), ids=[x[0] for x in PRECEDENCE_LEVELS]
)
def test_precedence_defaults_base_recipe_overrides(folder: Path, level: int) -> None:
    _, lr, seed, config = PRECEDENCE_LEVELS[level]
    base = (
        "name: base\ntask: sft\ntokenizer: {pretrained: org/tokenizer}\n"
        "model: {architecture: mistral, config: {bos_token_id: 1, eos_token_id: 1}}\n"
        "training: {learning_rate: 1.0e-3, seed: 1}\n"
        "data: {dataset: org/corpus, labels: [x, y, z]}\n"
    )
    write(folder / "base.yaml", base if level >= 1 else VALID)
    child = "base: base.yaml\n"
    if level >= 2:
        child += "model: {config: {eos_token_id: 2}}\ntraining: {learning_rate: 2.0e-3, seed: 2}\n"
        child += "data: {labels: [p, q]}\n"
    write(folder / "child.yaml", child)
    overrides = []
    if level >= 3:
        overrides = [
            "training.learning_rate=3e-3",
            "training.seed=3",
            "model.config.pad_token_id=3",
        ]
    recipe = load_recipe("child.yaml", overrides)
    assert recipe.training.learning_rate == lr
    assert recipe.training.seed == seed
    assert recipe.model.config == config
    # Lists replace, they do not concatenate.
    labels = {0: None, 1: ["x", "y", "z"]}.get(level, ["p", "q"])
    assert recipe.data.labels == labels


# --- errors --------------------------------------------------------------------------------------

ERROR_CASES = {
    "unknown top-level key": (
        VALID + "trainig: {learning_rate: 1}\n",
        [
            "bad.yaml: trainig: unknown key; did you mean `training`? "
            f"allowed here: {TOP_LEVEL_KEYS}"
        ],
    ),
    "unknown key in a section": (
        VALID + "training: {lr: 1}\n",
        [
            f"bad.yaml: training.lr: unknown key; did you mean `learning_rate`? allowed here: {TRAINING_KEYS}"
        ],
    ),
    "wrong type": (
        VALID + "training: {per_device_batch_size: lots}\n",
        [
            "bad.yaml: training.per_device_batch_size: 'lots': input should be a valid integer, "
            "unable to parse string as an integer"
        ],
    ),
    "negative size": (
        VALID + "training: {per_device_batch_size: -2}\n",
        ["bad.yaml: training.per_device_batch_size: -2: input should be greater than 0"],
    ),
    "negative learning rate": (
        VALID + "training: {learning_rate: -1.0}\n",
        ["bad.yaml: training.learning_rate: -1.0: input should be greater than 0"],
    ),
    "missing name and task": (
        "model: {architecture: mistral}\n",
        ["bad.yaml: name: required, but not set", "bad.yaml: task: required, but not set"],
    ),
    "invalid enum value": (
        VALID.replace("task: sft", "task: pretrain"),
        [
            "bad.yaml: task: 'pretrain': input should be 'sft', 'mlm', 'classification' or 'token_classification'"
        ],
    ),
    "invalid integer enum value": (
        VALID + "distributed: {strategy: deepspeed, zero_stage: 4}\n",
        ["bad.yaml: distributed.zero_stage: 4: input should be 0, 1, 2 or 3"],
    ),
    "bad YAML syntax": (
        "name: x\n  task: sft\n",
        ["bad.yaml: line 2, column 7: invalid YAML: mapping values are not allowed here"],
    ),
    "unclosed bracket": (
        "name: x\ntask: [sft\n",
        ["bad.yaml: line 3, column 1: invalid YAML: expected ',' or ']', but got '<stream end>'"],
    ),
    "empty file": (
        "",
        ["bad.yaml: (whole file): empty recipe: expected a mapping with `name` and `task`"],
    ),
    "comments only": (
        "# nothing yet\n",
        ["bad.yaml: (whole file): empty recipe: expected a mapping with `name` and `task`"],
    ),
    "a list instead of a mapping": (
        "- name: x\n- task: sft\n",
        ["bad.yaml: (whole file): expected a mapping of recipe sections, got a list"],
    ),
    "a scalar instead of a mapping": (
        "sft\n",
        ["bad.yaml: (whole file): expected a mapping of recipe sections, got a str"],
    ),
    "a tracker tag with a comma (W&B would split it)": (
        VALID + "tracking: {tags: [ok, 'a,b']}\n",
        ["bad.yaml: tracking.tags: 'a,b': a tag is a non-empty word or phrase without commas"],
    ),
    "an unknown tracker": (
        VALID + "training: {report_to: [wandb, comet]}\n",
        [
            "bad.yaml: training.report_to.1: 'comet': input should be 'tensorboard', 'wandb' "
            "or 'mlflow'"
        ],
    ),
}


@pytest.mark.parametrize("text,expected", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_error_message(folder: Path, text: str, expected: list[str]) -> None:
    assert problems(write(folder / "bad.yaml", text)) == expected


def test_unknown_key_lists_what_is_allowed_even_without_a_close_match(folder: Path) -> None:
    (message,) = problems(write(folder / "bad.yaml", VALID + "training: {lr: 1}\n"))
    assert "learning_rate" in message


def test_unknown_abbreviation_suggests_the_full_name(folder: Path) -> None:
    (message,) = problems(write(folder / "bad.yaml", VALID + "training: {lr: 1}\n"))
    assert "did you mean `learning_rate`?" in message


def test_a_typo_is_matched_by_the_fewest_edits(folder: Path) -> None:
    # To difflib `mokel` looks as much like `smoke` as like `model`; one edit makes it `model`.
    (message,) = problems(write(folder / "bad.yaml", VALID + "mokel: {}\n"))
    assert "did you mean `model`?" in message


def test_validator_messages_read_without_pydantic_prefix(folder: Path) -> None:
    text = VALID.replace("name: tiny", "name: ../x") + "secrets: [OK_NAME, bad-name]\n"
    assert problems(write(folder / "bad.yaml", text)) == [
        "bad.yaml: name: '../x' is not a plain folder name: use letters, digits, '.', '_' and "
        "'-' (no '/', no '..')",
        "bad.yaml: secrets: 'bad-name' is not an environment variable name (letters, digits, '_')",
    ]


def test_a_value_that_fits_no_member_of_a_union_is_one_problem(folder: Path) -> None:
    text = VALID.replace("  dataset: org/corpus\n", "  files: {train: [a.txt, 3], test: 4}\n")
    assert problems(write(folder / "bad.yaml", text)) == [
        "bad.yaml: data.files.train: ['a.txt', 3]: input should be str or list[str]",
        "bad.yaml: data.files.test: 4: input should be str or list[str]",
    ]


def test_several_problems_are_reported_together(folder: Path) -> None:
    text = VALID.replace("task: sft", "task: pretrain") + (
        "trainig: {}\n"
        "training: {learning_rate: -1, per_device_batch_size: lots}\n"
        "distributed: {zero_stage: 5}\n"
    )
    path = write(folder / "bad.yaml", text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, ["training.seed=x"])
    assert str(caught.value) == "\n".join(
        [
            "6 problems in the recipe:",
            "  - bad.yaml: task: 'pretrain': input should be 'sft', 'mlm', 'classification' or 'token_classification'",
            "  - bad.yaml: training.learning_rate: -1: input should be greater than 0",
            "  - bad.yaml: training.per_device_batch_size: 'lots': input should be a valid "
            "integer, unable to parse string as an integer",
            "  - command line: training.seed: 'x': input should be a valid integer, unable to "
            "parse string as an integer",
            "  - bad.yaml: distributed.zero_stage: 5: input should be 0, 1, 2 or 3",
            "  - bad.yaml: trainig: unknown key; did you mean `training`? "
            f"allowed here: {TOP_LEVEL_KEYS}",
        ]
    )
    assert caught.value.exit_code == 2


def test_error_in_a_base_file_names_the_base_file(folder: Path) -> None:
    write(folder / "bases" / "parent.yaml", VALID + "training: {learning_rate: -1}\n")
    write(folder / "child.yaml", "base: bases/parent.yaml\nname: child\n")
    assert problems("child.yaml") == [
        "bases/parent.yaml: training.learning_rate: -1: input should be greater than 0"
    ]


def test_syntax_error_in_a_base_file_names_the_base_file(folder: Path) -> None:
    write(folder / "parent.yaml", "name: x\n  task: sft\n")
    write(folder / "child.yaml", "base: parent.yaml\n")
    assert problems("child.yaml") == [
        "parent.yaml: line 2, column 7: invalid YAML: mapping values are not allowed here"
    ]


def test_key_missing_everywhere_is_blamed_on_the_recipe_that_was_run(folder: Path) -> None:
    write(folder / "parent.yaml", "description: shared settings\n")
    write(folder / "child.yaml", "base: parent.yaml\n")
    assert problems("child.yaml") == [
        "child.yaml: name: required, but not set",
        "child.yaml: task: required, but not set",
    ]


def test_python_tags_are_refused_and_nothing_runs(folder: Path) -> None:
    marker = folder / "pwned"
    text = f'name: !!python/object/apply:os.system ["touch {marker}"]\ntask: sft\n'
    assert problems(write(folder / "bad.yaml", text)) == [
        "bad.yaml: name: the Python-specific tag !!python/object/apply:os.system is refused "
        "(line 1, column 7): a recipe is plain data, and this tag would import or run code"
    ]
    assert not marker.exists()


def test_file_not_found(folder: Path) -> None:
    assert problems("missing.yaml") == ["missing.yaml: file not found"]
    write(folder / "child.yaml", "base: nowhere/parent.yaml\n")
    assert problems("child.yaml") == ["child.yaml: base: 'nowhere/parent.yaml': no such file"]


def test_file_outside_the_working_directory_is_named_absolute(folder: Path) -> None:
    outside = folder.parent / f"{folder.name}-elsewhere.yaml"
    write(outside, "")
    try:
        assert problems(outside) == [
            f"{outside}: (whole file): empty recipe: expected a mapping with `name` and `task`"
        ]
    finally:
        outside.unlink()


def test_duplicate_key_is_an_error(folder: Path) -> None:
    text = VALID + "training:\n  seed: 1\n  max_steps: 3\ntraining:\n  learning_rate: 1.0e-4\n"
    (message,) = problems(write(folder / "bad.yaml", text))
    assert message.startswith("bad.yaml: training: given twice")
    assert "line 12" in message


def test_empty_section_means_defaults(folder: Path) -> None:
    recipe = load_recipe(write(folder / "r.yaml", VALID + "training:\n  # seed: 1\n"))
    assert recipe.training.seed == 42


# --- cross-field checks --------------------------------------------------------------------------

CROSS_FIELD_CASES = {
    "zero stage under ddp": (
        ["distributed.zero_stage=2"],
        ["command line: distributed.zero_stage: 2 needs `distributed.strategy: deepspeed`"],
    ),
    "offload under ddp": (
        ["distributed.offload_optimizer=cpu"],
        [
            "command line: distributed.offload_optimizer: 'cpu' needs "
            "`distributed.strategy: deepspeed`"
        ],
    ),
    "offload_parameters without stage 3": (
        [
            "distributed.strategy=deepspeed",
            "distributed.zero_stage=2",
            "distributed.offload_parameters=cpu",
        ],
        ["command line: distributed.offload_parameters: needs `zero_stage: 3` (got 2)"],
    ),
    "offload_optimizer without ZeRO": (
        ["distributed.strategy=deepspeed", "distributed.offload_optimizer=cpu"],
        ["command line: distributed.offload_optimizer: needs `zero_stage` 1, 2 or 3"],
    ),
    "offloaded paged optimizer": (
        [
            "distributed.strategy=deepspeed",
            "distributed.zero_stage=2",
            "distributed.offload_optimizer=cpu",
            "training.optimizer=paged_adamw_32bit",
        ],
        [
            "command line: training.optimizer: 'paged_adamw_32bit' would be silently replaced by "
            "DeepSpeed's CPUAdam under `distributed.offload_optimizer: cpu`; use `adamw_torch` "
            "(runs as CPUAdam) or turn the offload off"
        ],
    ),
    "eval strategy without eval data": (
        ["training.eval_strategy=epoch"],
        [
            "command line: training.eval_strategy: 'epoch' needs evaluation data: set "
            "`data.eval_split` or `data.eval_fraction`"
        ],
    ),
    "eval steps missing": (
        ["training.eval_strategy=steps", "data.eval_fraction=0.1"],
        ["command line: training.eval_steps: required when `eval_strategy: steps`"],
    ),
    "best model with another cadence": (
        [
            "training.eval_strategy=epoch",
            "data.eval_split=test",
            "training.load_best_model_at_end=1",
        ],
        [
            "command line: training.load_best_model_at_end: needs evaluation and saving on the "
            "same cadence (eval_strategy 'epoch', checkpointing.strategy 'steps')"
        ],
    ),
    "best model with misaligned steps": (
        [
            "training.eval_strategy=steps",
            "training.eval_steps=100",
            "data.eval_split=test",
            "training.load_best_model_at_end=true",
            "checkpointing.every_steps=150",
        ],
        [
            "command line: checkpointing.every_steps: 150 must be a multiple of "
            "training.eval_steps (100) to keep the best model"
        ],
    ),
    "best-model metric nothing computes": (
        [
            "training.eval_strategy=epoch",
            "checkpointing.strategy=epoch",
            "data.eval_split=test",
            "training.load_best_model_at_end=true",
            "training.metric_for_best_model=accuracy",
        ],
        [
            "command line: training.metric_for_best_model: 'accuracy' is not computed for task "
            "'sft'; allowed: loss, eval_loss"
        ],
    ),
    "classification without labels": (
        ["task=classification"],
        ["r.yaml: data.labels: classification needs the label names, at least two, in id order"],
    ),
    "classification with one label": (
        ["task=classification", "data.labels=[only]"],
        [
            "command line: data.labels: classification needs the label names, at least two, "
            "in id order"
        ],
    ),
    "duplicate labels": (
        ["data.labels=[a,a]"],
        ["command line: data.labels: ['a', 'a']: label names must be distinct"],
    ),
    "mistral with task mlm": (
        ["task=mlm"],
        ["r.yaml: model.architecture: 'mistral' cannot do task 'mlm'; allowed: distilbert, bert"],
    ),
    "data.files without the train split": (
        ["data.dataset=null", "data.files.validation=v.txt"],
        ["r.yaml: data.train_split: 'train': no such split in data.files (has: validation)"],
    ),
    "dataset and files": (
        ["data.files.train=t.txt"],
        ["command line: data.files: set together with `data.dataset`; use one of the two"],
    ),
    "warmup steps and ratio": (
        ["training.warmup_steps=10", "training.warmup_ratio=0.1"],
        [
            "command line: training.warmup_ratio: set together with `warmup_steps`; "
            "use one of the two"
        ],
    ),
    "eval split and fraction": (
        ["data.eval_split=test", "data.eval_fraction=0.1"],
        [
            "command line: data.eval_fraction: set together with `data.eval_split`; "
            "use one of the two"
        ],
    ),
    "no model": (
        ["model.architecture=null"],
        [
            "r.yaml: model: set `pretrained` (hub id or folder) or `architecture` to build "
            "from config"
        ],
    ),
    "node-local storage under DDP": (
        ["checkpointing.use_node_local_storage=true", "checkpointing.node_local_dir=/local/c"],
        [
            "command line: checkpointing.use_node_local_storage: a DeepSpeed option; DDP "
            "checkpoints are written once, by rank 0, to the run directory"
        ],
    ),
    "node-local storage without its folder": (
        ["distributed.strategy=deepspeed", "checkpointing.use_node_local_storage=true"],
        [
            "command line: checkpointing.node_local_dir: required with "
            "`use_node_local_storage: true`: a folder on each node's own disk, e.g. "
            "/local/scratch/checkpoints"
        ],
    ),
    "node-local folder that is relative": (
        [
            "distributed.strategy=deepspeed",
            "checkpointing.use_node_local_storage=true",
            "checkpointing.node_local_dir=scratch/{node}",
        ],
        ["command line: checkpointing.node_local_dir: 'scratch/{node}' must be an absolute path"],
    ),
    "node-local folder without node-local storage": (
        ["checkpointing.node_local_dir=/local/c"],
        [
            "command line: checkpointing.node_local_dir: only used with "
            "`use_node_local_storage: true`"
        ],
    ),
    "best model with saving off": (
        [
            "training.load_best_model_at_end=true",
            "checkpointing.strategy=no",
        ],
        [
            "command line: training.load_best_model_at_end: needs evaluation and saving on the "
            "same cadence (eval_strategy 'no', checkpointing.strategy 'no')"
        ],
    ),
    "best model saving less often than it evaluates": (
        [
            "training.eval_strategy=steps",
            "training.eval_steps=200",
            "data.eval_split=test",
            "training.load_best_model_at_end=true",
            "checkpointing.every_steps=100",
        ],
        [
            "command line: checkpointing.every_steps: 100 must be a multiple of "
            "training.eval_steps (200) to keep the best model"
        ],
    ),
    "eval split not in data.files": (
        ["data.dataset=null", "data.files.train=t.jsonl", "data.eval_split=validation[:10%]"],
        [
            "command line: data.eval_split: 'validation[:10%]': no such split in data.files "
            "(has: train)"
        ],
    ),
    "model config without an architecture": (
        ["model.architecture=null", "model.pretrained=org/model", "model.config.hidden_size=64"],
        [
            "command line: model.config: config fields need `model.architecture` to know what "
            "they shape"
        ],
    ),
    "trained tokenizer and a pretrained one": (
        ["tokenizer.train.algorithm=byte_level_bpe"],
        [
            "r.yaml: tokenizer.pretrained: set together with `train.algorithm: byte_level_bpe`; "
            "use `algorithm: retrain` to retrain it, or drop one of the two"
        ],
    ),
    "retrain with add_prefix_space": (
        ["tokenizer.train.algorithm=retrain", "tokenizer.train.add_prefix_space=true"],
        [
            "command line: tokenizer.train.add_prefix_space: 'retrain' keeps the pretrained "
            "tokenizer's pipeline; this setting would be ignored, so drop it"
        ],
    ),
    "retrain with lowercase": (
        ["tokenizer.train.algorithm=retrain", "tokenizer.train.lowercase=true"],
        [
            "command line: tokenizer.train.lowercase: 'retrain' keeps the pretrained "
            "tokenizer's pipeline; this setting would be ignored, so drop it"
        ],
    ),
    "retrain without a tokenizer": (
        ["tokenizer.pretrained=null", "tokenizer.train.algorithm=retrain"],
        [
            "command line: tokenizer.train.algorithm: 'retrain' needs `tokenizer.pretrained` as "
            "its starting point"
        ],
    ),
}


@pytest.mark.parametrize(
    "overrides,expected", CROSS_FIELD_CASES.values(), ids=CROSS_FIELD_CASES.keys()
)
def test_cross_field_check(folder: Path, overrides: list[str], expected: list[str]) -> None:
    assert problems(write(folder / "r.yaml", VALID), overrides) == expected


# Combinations next to the refused ones above that must load: a check that fires on them is as
# wrong as one that stays silent.
ACCEPTED_CASES = {
    "best model saving at every second evaluation": [
        "training.eval_strategy=steps",
        "training.eval_steps=100",
        "data.eval_split=test",
        "training.load_best_model_at_end=true",
        "checkpointing.every_steps=200",
    ],
    "best model on steps of the same size": [
        "training.eval_strategy=steps",
        "training.eval_steps=150",
        "data.eval_split=test",
        "training.load_best_model_at_end=true",
        "checkpointing.every_steps=150",
    ],
    "eval split in data.files, sliced": [
        "data.dataset=null",
        "data.files.train=t.jsonl",
        "data.files.validation=v.jsonl",
        "data.eval_split=validation[:10%]",
    ],
    "model config with an architecture over a pretrained model": [
        "model.pretrained=org/model",
        "model.config.hidden_size=64",
    ],
    "retraining a pretrained tokenizer": ["tokenizer.train.algorithm=retrain"],
}


@pytest.mark.parametrize("overrides", ACCEPTED_CASES.values(), ids=ACCEPTED_CASES.keys())
def test_cross_field_check_accepts(folder: Path, overrides: list[str]) -> None:
    recipe = load_recipe(write(folder / "r.yaml", VALID), overrides)
    assert recipe.name == "tiny"


@pytest.mark.parametrize("optimizer", ["sgd", "adafactor"])
def test_offloaded_optimizer_that_is_not_adamw_is_refused(folder: Path, optimizer: str) -> None:
    overrides = [
        "distributed.strategy=deepspeed",
        "distributed.zero_stage=2",
        "distributed.offload_optimizer=cpu",
        f"training.optimizer={optimizer}",
    ]
    (message,) = problems(write(folder / "r.yaml", VALID), overrides)
    assert message.startswith(f"command line: training.optimizer: '{optimizer}' would be")
    assert "CPUAdam" in message


def test_offloaded_adamw_is_accepted(folder: Path) -> None:
    overrides = [
        "distributed.strategy=deepspeed",
        "distributed.zero_stage=2",
        "distributed.offload_optimizer=cpu",
        "training.optimizer=adamw_torch",
    ]
    recipe = load_recipe(write(folder / "r.yaml", VALID), overrides)
    assert recipe.distributed.offload_optimizer == "cpu"


def test_cross_field_problems_are_reported_together(folder: Path) -> None:
    overrides = ["distributed.zero_stage=2", "training.warmup_steps=1", "training.warmup_ratio=0.1"]
    assert problems(write(folder / "r.yaml", VALID), overrides) == [
        "command line: distributed.zero_stage: 2 needs `distributed.strategy: deepspeed`",
        "command line: training.warmup_ratio: set together with `warmup_steps`; use one of the two",
    ]


def test_cross_field_problem_in_a_file_names_the_file(folder: Path) -> None:
    write(folder / "r.yaml", VALID + "distributed: {zero_stage: 3}\n")
    assert problems("r.yaml") == [
        "r.yaml: distributed.zero_stage: 3 needs `distributed.strategy: deepspeed`"
    ]


# --- command line --------------------------------------------------------------------------------


def run_launcher(
    *args: str, cwd: Path = REPO, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *flags, "-m", "launcher", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.process
def test_cli_reports_recipe_problems_with_exit_code_2_and_no_traceback(folder: Path) -> None:
    write(folder / "bad.yaml", VALID + "training: {learning_rate: -1, lr: 1}\n")
    result = run_launcher("plan", "bad.yaml", "distributed.zero_stage=9", cwd=folder)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        "error: 3 problems in the recipe:\n"
        "  - bad.yaml: training.learning_rate: -1: input should be greater than 0\n"
        f"  - bad.yaml: training.lr: unknown key; did you mean `learning_rate`? allowed here: {TRAINING_KEYS}\n"
        "  - command line: distributed.zero_stage: 9: input should be 0, 1, 2 or 3\n"
    )


@pytest.mark.process
def test_cli_reports_a_missing_recipe(folder: Path) -> None:
    result = run_launcher("plan", "nowhere.yaml", cwd=folder)
    assert (result.returncode, result.stderr) == (
        2,
        "error: 1 problem in the recipe:\n  - nowhere.yaml: file not found\n",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "recipes/sft-mistral.yaml", "training.max_steps=10"],
        ["plan", "recipes/sft-mistral.yaml", "--run-dir", "runs/x", "training.max_steps=10"],
        ["plan", "sft-mistral", "training.max_steps=10"],
    ],
    ids=["after the recipe", "after an option", "shipped name"],
)
def test_cli_plan_with_override(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "+ overrides: training.max_steps=10\n" in out
    assert "\nsteps          10 (max_steps)\n" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["plan", "recipes/sft-mistral.yaml", "training.max_steps=10", "--smoke"],
        ["plan", "recipes/sft-mistral.yaml", "--smoke", "training.max_steps=10"],
    ],
    ids=["before --smoke", "after --smoke"],
)
def test_cli_plan_smoke_with_override(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(REPO)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "+ overrides: training.max_steps=10\n" in out
    assert "\nsmoke          model: tiny mistral" in out


def test_cli_smoke_keeps_command_line_overrides(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    assert main(["plan", "recipes/sft-mistral.yaml", "--smoke", "training.max_steps=10"]) == 0
    assert "\nsteps          10 (max_steps)\n" in capsys.readouterr().out


def test_cli_plan_writes_the_plan_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from launcher.plan.build import build_plan

    monkeypatch.chdir(REPO)
    out_dir = tmp_path / "out dir"
    run_dir = tmp_path / "run"
    assert (
        main(["plan", "recipes/sft-mistral.yaml", "-o", str(out_dir), "--run-dir", str(run_dir)])
        == 0
    )
    assert capsys.readouterr().out.endswith(f"\nplan files written to {out_dir}\n")
    plan = build_plan(
        load_recipe("recipes/sft-mistral.yaml"), run_dir, source="recipes/sft-mistral.yaml"
    )
    expected = {path.name: text for path, text in plan.files().items()}
    # command.sh there runs the same plan through `launcher run` (tests/test_outputs.py).
    expected["command.sh"] = (
        f"#!/usr/bin/env bash\nset -euo pipefail\ncd {REPO}\nexec {sys.executable} -m launcher "
        f"run recipes/sft-mistral.yaml --run-dir {run_dir}\n"
    )
    assert {p.name: p.read_text() for p in out_dir.iterdir()} == expected


def test_cli_rejects_an_unknown_option(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as caught:
        main(["plan", "recipes/sft-mistral.yaml", "--bogus"])
    assert caught.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_cli_recipes_lists_the_shipped_recipes(capsys) -> None:
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = {p.stem: yaml.safe_load(p.read_text())["description"] for p in SHIPPED}
    assert len(lines) == len(SHIPPED) == 6
    for line, (name, description) in zip(lines, expected.items(), strict=True):
        assert line.split(maxsplit=1) == [name, description]


def imported_modules(importtime_stderr: str) -> set[str]:
    """Top-level package names from ``python -X importtime`` output."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name.split(".")[0])
    return names


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "recipes/sft-mistral.yaml"],
        ["plan", "recipes/sft-mistral-7b-zero3.yaml", "--smoke"],
        ["plan", "recipes/sft-mistral.yaml", "--smoke", "training.report_to=[wandb,mlflow]"],
        ["--help"],
        ["plan", "--help"],
        ["recipes"],
    ],
    ids=" ".join,
)
@pytest.mark.process
def test_cli_imports_no_heavy_library(args: list[str]) -> None:
    result = run_launcher(*args, flags=("-X", "importtime"))
    assert result.returncode == 0, result.stderr[-2000:]
    modules = imported_modules(result.stderr)
    assert "launcher" in modules, "the importtime output was not parsed"
    assert not modules & HEAVY_MODULES, sorted(modules & HEAVY_MODULES)
