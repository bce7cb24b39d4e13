"""Plan-time checks of ``data.column_names``, ``data.template``, ``data.train_samples`` /
``eval_samples`` and ``data.group_texts`` (``launcher.recipe.data_checks``): each mistake is named
by its key before any rank starts, and the recipes the tutorials write pass."""

from __future__ import annotations

from typing import Any

import pytest

from launcher.recipe.checks import check_recipe
from launcher.recipe.data_template import TemplateError, template_fields
from launcher.recipe.schema import Recipe

MODELS = {"sft": "mistral", "mlm": "bert", "classification": "bert"}


def problems(task: str, **data: Any) -> list[tuple[str, str]]:
    fields = {"files": {"train": "train.tsv"}, **data}
    if task == "classification":
        fields.setdefault("labels", ["neg", "pos"])
    if task == "token_classification":
        fields.setdefault("labels", ["O", "B-PER"])
    recipe = Recipe.model_validate(
        {
            "name": "checks",
            "task": task,
            "model": {"architecture": MODELS.get(task, "bert")},
            "tokenizer": {"pretrained": "org/tokenizer"},
            "data": fields,
        }
    )
    return [(key, message) for key, message in check_recipe(recipe) if key.startswith("data")]


def test_the_tutorials_recipes_pass() -> None:
    assert problems("classification", column_names=["text", "label"], train_samples=1000) == []
    assert problems("classification", column_names=["title", "body", "label"],
                    template="{title}. {body}") == []  # fmt: skip
    assert problems("sft", files={"train": "qa.jsonl"},
                    template="### Question: {q}\n### Answer: {a}") == []  # fmt: skip
    assert problems("mlm", files={"train": "play.txt"}, group_texts=True) == []
    assert problems("mlm", eval_fraction=0.1, eval_samples=50) == []
    assert problems("classification", files={"train": "a.dat"}, format="csv",
                    column_names=["text", "label"]) == []  # fmt: skip


@pytest.mark.parametrize(
    ("task", "data", "expected"),
    [
        (
            "classification",
            {"files": None, "dataset": "imdb", "column_names": ["text", "label"]},
            ("data.column_names", "names the columns of headerless csv/tsv files (data.files)"),
        ),
        (
            "mlm",
            {"files": {"train": "play.txt"}, "column_names": ["text"]},
            ("data.column_names", "only for headerless csv/tsv files, not .txt files (play.txt)"),
        ),
        (
            "mlm",
            {"files": {"train": "a.csv"}, "format": "json", "column_names": ["text"]},
            ("data.column_names", "only for headerless csv/tsv files, not json (a.csv)"),
        ),
        (
            "mlm",
            {"column_names": ["text", "text"]},
            ("data.column_names", "'text' named twice: names must be distinct"),
        ),
        (
            "mlm",
            {"column_names": ["body"]},
            ("data.text_column", "'text' is not among data.column_names (body)"),
        ),
        (
            "classification",
            {"column_names": ["text", "stars"]},
            ("data.label_column", "'label' is not among data.column_names (text, stars)"),
        ),
        (
            "sft",
            {"column_names": ["q", "a"], "template": "{q} {answer}"},
            ("data.template", "'answer' not among data.column_names (q, a)"),
        ),
        (
            "sft",
            {"template": "{q"},
            ("data.template", "'{q': not a valid format string: expected '}' before end of string"),
        ),
        (
            "token_classification",
            {"files": {"train": "a.jsonl"}, "template": "{tokens}"},
            (
                "data.template",
                "token classification reads words and tags (data.tokens_column, "
                "data.tags_column), not a text a template could make",
            ),
        ),
        (
            "classification",
            {"eval_samples": 10},
            (
                "data.eval_samples",
                "there is no evaluation data to sample: set data.eval_split or data.eval_fraction",
            ),
        ),
        (
            "sft",
            {"group_texts": True},
            (
                "data.group_texts",
                "only for task 'mlm', not 'sft' (SFT fills rows with data.packing)",
            ),
        ),
        (
            "classification",
            {"loss_on": "completion"},
            ("data.loss_on", "only for task 'sft' (conversations, prompts and completions)"),
        ),
        (
            "mlm",
            {"template": {"prompt": "{q}", "completion": "{a}"}},
            (
                "data.template",
                "a prompt/completion mapping is for task 'sft'; mlm reads one text: give one "
                "format string",
            ),
        ),
        (
            "sft",
            {"sample_format": "messages", "loss_on": "completion"},
            ("data.loss_on", "'completion' needs prompt-completion samples, not messages"),
        ),
        (
            "sft",
            {"sample_format": "text", "loss_on": "assistant"},
            ("data.loss_on", "'assistant' needs conversations (messages), not plain text"),
        ),
        (
            "sft",
            {"template": {"prompt": "{q}", "completion": "{a}"}, "sample_format": "messages"},
            ("data.sample_format", "'messages', but data.template makes prompt-completion pairs"),
        ),
        (
            "sft",
            {"template": {"prompt": "{q}"}, "columns": {"prompt": "question"}},
            ("data.columns", "prompt set here and by data.template: one of the two"),
        ),
        (
            "sft",
            {"template": {"prompt": "{q", "completion": "{a}"}},
            (
                "data.template.prompt",
                "'{q': not a valid format string: expected '}' before end of string",
            ),
        ),
    ],
)
def test_each_mistake_is_named_by_its_key(
    task: str, data: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert problems(task, **data) == [expected]


@pytest.mark.parametrize(
    ("template", "fields"),
    [
        ("### Question: {q}\n### Answer: {a}", ["q", "a"]),
        ("{a} and {a} again, {{not a field}}", ["a"]),
        ("{words[0]} {meta.source} {score:>{width}}", ["words", "meta", "score", "width"]),
        ("{first name}!", ["first name"]),
    ],
)
def test_template_fields_are_the_columns_it_reads(template: str, fields: list[str]) -> None:
    assert template_fields(template) == fields


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("no fields", "names no column, so every row would get the same text"),
        ("{} and {}", "{} is a positional field; name a column instead"),
        ("{0}", "{0} is a positional field"),
        ("a } b", "not a valid format string: Single '}' encountered in format string"),
    ],
)
def test_templates_that_cannot_fill_a_row_are_refused(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        template_fields(template)


def test_a_chat_template_file_must_exist(tmp_path: Any) -> None:
    recipe = Recipe.model_validate(
        {
            "name": "chat",
            "task": "sft",
            "model": {"architecture": "mistral"},
            "tokenizer": {"pretrained": "org/tokenizer", "chat_template": "templates/chat.jinja"},
            "data": {"dataset": "org/chats", "loss_on": "assistant"},
        }
    )
    assert [p for p in check_recipe(recipe) if p[0] == "tokenizer.chat_template"] == [
        ("tokenizer.chat_template", "templates/chat.jinja does not exist (or is not a file)")
    ]
    (tmp_path / "chat.jinja").write_text("{{ messages }}")
    recipe.tokenizer.chat_template = str(tmp_path / "chat.jinja")
    assert not [p for p in check_recipe(recipe) if p[0] == "tokenizer.chat_template"]


def test_a_trained_tokenizer_needs_a_chat_template_for_conversations() -> None:
    recipe = Recipe.model_validate(
        {
            "name": "chat",
            "task": "sft",
            "model": {"architecture": "mistral"},
            "tokenizer": {"train": {"algorithm": "byte_level_bpe", "special_tokens": ["</s>"]}},
            "data": {"dataset": "org/chats", "sample_format": "messages"},
        }
    )
    expected = ("tokenizer.chat_template", "the run trains its tokenizer, which has no chat ")
    found = [(k, m[: len(expected[1])]) for k, m in check_recipe(recipe) if k == expected[0]]
    assert found == [expected]
    recipe.tokenizer.chat_template = "{{ messages }}"
    assert not [p for p in check_recipe(recipe) if p[0] == "tokenizer.chat_template"]


def test_every_chat_template_trl_ships_passes_the_plan_check() -> None:
    """The plan parses templates as transformers does (``{% generation %}``, loop controls):
    every template TRL ships, its training versions included, and the smoke's ChatML pass."""
    from pathlib import Path

    import trl

    from launcher.recipe.chat_template import CHATML, template_problem

    shipped = sorted((Path(trl.__file__).parent / "chat_templates").glob("*.jinja"))
    assert len(shipped) > 10
    problems = [(path.name, template_problem(str(path))) for path in shipped]
    assert [(name, problem) for name, problem in problems if problem] == []
    assert template_problem(CHATML) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        # A folder or a file name without .jinja/.j2 is taken as the template's text.
        ("templates", "'templates' does not read `messages`, so it would render the same text"),
        ("{% for m in messages %}{{ m.content }", "not a Jinja template: line 1: unexpected '}'"),
        (
            "{% for m in messages %}{{ m.content }}",
            "not a Jinja template: line 1: Unexpected end of template",
        ),
    ],
)
def test_a_chat_template_that_cannot_render_conversations_is_refused(value: str, says: str) -> None:
    from launcher.recipe.chat_template import template_problem

    problem = template_problem(value)
    assert problem is not None and problem.startswith(says), problem
