"""The plan with the tutorials' data options: the summary's ``data`` rows (for MLM, grouping on or
off and where the padding share is measured), and ``--smoke`` keeping a random sample random and
generating the columns a ``data.template`` reads, which the real data loading then fills."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.plan.build import build_plan
from launcher.recipe.loader import load_recipe
from launcher.recipe.schema import Recipe

REPO = Path(__file__).resolve().parents[2]


def data_lines(summary: str) -> list[str]:
    """The ``data`` row of a plan summary and its continuation lines."""
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("data "))
    out = [lines[start][len("data") :].strip()]
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        out.append(line.strip())
    return out


def mlm_plan(*overrides: str) -> Any:
    recipe = load_recipe(REPO / "recipes" / "mlm-scratch.yaml", list(overrides))
    return build_plan(recipe, Path("/runs/mlm"), overrides=overrides)


def test_mlm_plan_says_whether_texts_are_grouped_and_where_padding_is_measured() -> None:
    length = mlm_plan().recipe.data.max_length
    assert data_lines(mlm_plan().summary()) == [
        f"one sample per text, truncated to {length} tokens; its padding share is measured when "
        "the data is prepared (the run log's `data:` line); data.group_texts: true fills blocks"
    ]
    assert data_lines(mlm_plan("data.group_texts=true").summary()) == [
        f"texts concatenated and cut into full blocks of {length} tokens (data.group_texts): "
        "no padding; the last partial block is dropped"
    ]


def test_a_run_that_prepared_its_data_shows_the_measured_padding(tmp_path: Path) -> None:
    """The rank records what it prepared; planning that run again shows the measured share."""
    recipe = load_recipe(REPO / "recipes" / "mlm-scratch.yaml")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "data-summary.json").write_text(
        '{"key": "mlm-0123", "splits": {"train": {"rows": 10, "tokens": 160, "max_length": 64}}}'
    )
    lines = data_lines(build_plan(recipe, run_dir).summary())
    assert (
        lines[-1] == "as this run last prepared it: train 10 rows, 160 tokens, padding 75.0% at 64"
    )
    (run_dir / "data-summary.json").write_text("{not json")
    assert not any(
        "last prepared" in line for line in data_lines(build_plan(recipe, run_dir).summary())
    )


def test_sample_template_and_headerless_columns_are_shown(tmp_path: Path) -> None:
    recipe = Recipe.model_validate(
        {
            "name": "qa",
            "task": "sft",
            "model": {"architecture": "mistral"},
            "tokenizer": {"pretrained": "org/tokenizer"},
            "data": {
                "files": {"train": str(tmp_path / "qa.tsv")},
                "column_names": ["q", "a"],
                "template": "### Question: {q}\n### Answer: {a}",
                "train_samples": 1000,
                "shuffle_seed": 7,
            },
        }
    )
    assert data_lines(build_plan(recipe, tmp_path / "run").summary()) == [
        "headerless files, columns: q, a",
        "1,000 training rows drawn at random: shuffle(seed=7).select(range(1000))",
        "text = data.template filled from columns q, a",
    ]


def test_a_plain_recipe_has_no_data_row() -> None:
    recipe = load_recipe(REPO / "recipes" / "sft-mistral.yaml", [])
    summary = build_plan(recipe, Path("/runs/sft")).summary()
    assert not any(line.startswith("data ") for line in summary.splitlines())


def classification(**data: Any) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "reviews",
            "task": "classification",
            "model": {"architecture": "bert"},
            "tokenizer": {"pretrained": "org/tokenizer"},
            "data": {"labels": ["neg", "pos"], **data},
        }
    )


def test_smoke_of_local_files_keeps_a_random_sample_random(tmp_path: Path) -> None:
    """A slice of a label-sorted file would be one label: the sample only shrinks."""
    (tmp_path / "train.csv").write_text("text,label\n")
    recipe = classification(files={"train": str(tmp_path / "train.csv")}, train_samples=5000)
    plan = build_plan(recipe, tmp_path / "run", smoke=True)
    count = recipe.smoke.num_samples
    assert (plan.recipe.data.train_split, plan.recipe.data.train_samples) == ("train", count)
    assert f"data: {count} shuffled samples (data.train_samples) of the recipe's local files" in (
        plan.summary()
    )


def test_smoke_generates_the_columns_of_a_template_and_the_samples_fit(tmp_path: Path) -> None:
    from launcher.ranks.data import load_raw_splits
    from launcher.smoke_data import write_smoke_data

    recipe = classification(
        dataset="org/reviews",
        template="{title}. {body}",
        eval_fraction=0.25,
        train_samples=5000,
        eval_samples=5000,
        column_names=None,
    )
    plan = build_plan(recipe, tmp_path / "run", smoke=True)
    data = plan.recipe.data
    count = recipe.smoke.num_samples
    assert (data.train_samples, data.eval_samples) == (count - count // 4, count // 4)
    write_smoke_data(plan.recipe, plan.layout.smoke_data_dir)
    splits = load_raw_splits(data)
    assert (len(splits["train"]), len(splits["eval"])) == (data.train_samples, data.eval_samples)
    row = splits["train"][0]
    assert {"title", "body", "label", "text"} <= set(row)
    assert row["text"] == f"{row['title']}. {row['body']}"


def test_smoke_data_of_grouped_mlm_fills_blocks_in_both_splits(tmp_path: Path) -> None:
    """mlm-scratch holds out 5% for evaluation: five one-sentence rows would not fill one block
    of 64 tokens, so grouped smoke rows are paragraphs."""
    from launcher.ranks.data import load_recipe_splits, tokenize_splits, training_texts
    from launcher.ranks.data_cache import summarize
    from launcher.ranks.tokenizer import prepare_tokenizer
    from launcher.smoke_data import write_smoke_data

    recipe = load_recipe(REPO / "recipes" / "mlm-scratch.yaml", ["data.group_texts=true"])
    plan = build_plan(recipe, tmp_path / "run", smoke=True, exists=lambda p: False)
    smoke = plan.recipe
    write_smoke_data(smoke, plan.layout.smoke_data_dir)
    splits = load_recipe_splits(smoke)
    tokenizer = prepare_tokenizer(
        smoke.tokenizer, model_pretrained=None, texts=lambda: training_texts(smoke, splits)
    )
    summary = summarize(tokenize_splits(smoke, splits, tokenizer), smoke.data.max_length)
    for name, numbers in summary.items():
        assert numbers["rows"] >= 2, name
        assert numbers["tokens"] == numbers["rows"] * smoke.data.max_length, name


def sft(**data: Any) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "chat",
            "task": "sft",
            "model": {"architecture": "mistral"},
            "tokenizer": {"pretrained": "org/tokenizer"},
            "data": {"dataset": "org/chats", **data},
        }
    )


def test_chat_and_instruction_samples_say_their_format_and_loss(tmp_path: Path) -> None:
    def lines(**data: Any) -> list[str]:
        return data_lines(build_plan(sft(**data), tmp_path / "run").summary())

    assert lines(loss_on="assistant") == [
        "samples: read from the columns as TRL reads them: messages, else prompt + completion, "
        "else plain text (text)",
        "loss on the assistant turns only (the template's {% generation %} blocks); samples "
        "packed into rows of 512 tokens, each attending to itself only",
    ]
    assert lines(columns={"messages": "conversations"}, packing=False) == [
        "samples: conversations (messages) rendered by the chat template",
        "loss on every token; samples cut to 512 tokens",
    ]
    template = {
        "prompt": "### Instruction:\n{instruction}\n### Response:\n",
        "completion": "{output}",
    }
    assert lines(template=template)[1:] == [
        "completion = data.template.completion filled from columns output",
        "samples: prompt-completion pairs (text, or messages through the chat template)",
        "loss on the completions only (prompt tokens are labelled -100); samples packed into "
        "rows of 512 tokens, each attending to itself only",
    ]
    assert lines(template=template)[0].startswith("prompt = data.template.prompt filled from")


def test_smoke_writes_chat_rows_the_data_stage_reads(tmp_path: Path) -> None:
    """--smoke of a chat recipe: conversations under the recipe's column name, and a ChatML
    template with generation markers for the stand-in tokenizer."""
    from launcher.ranks.data import load_raw_splits
    from launcher.smoke_data import write_smoke_data

    recipe = sft(columns={"messages": "conversations"}, loss_on="assistant")
    plan = build_plan(recipe, tmp_path / "run", smoke=True)
    assert "{%- generation %}" in (plan.recipe.tokenizer.chat_template or "")
    assert "<|im_end|>" in plan.recipe.tokenizer.special_tokens
    write_smoke_data(plan.recipe, tmp_path / "run" / "smoke-data")
    train = load_raw_splits(plan.recipe.data)["train"]
    assert "messages" in train.column_names  # mapped from `conversations`
    roles = {turn["role"] for row in train["messages"] for turn in row}
    assert roles >= {"user", "assistant"}
