"""SFT's sample formats prepared by the launcher (for its data cache) give exactly the rows TRL's
own ``SFTTrainer`` preparation gives the same samples: ids, labels and packed sample lengths, for
conversations, prompt-completion pairs (text and messages) and ShareGPT rows, with the loss on
all tokens, completions or assistant turns, packed and not.

Real parts: a byte-level BPE tokenizer trained by the launcher with ChatML's special tokens, the
Qwen2.5 chat template TRL ships (and TRL's training version of it for assistant masks), local
JSON-lines files, TRL's ``SFTTrainer`` with a tiny Mistral.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from test_data_prep import WORDS, make_tokenizer, run_prepare, tiny_mistral

from launcher.ranks.data_cache import cache_key
from launcher.ranks.sft_samples import IGNORED, SampleError
from launcher.recipe.schema import Recipe

CHATML = ["<|im_start|>", "<|im_end|>"]
MAX_LENGTH = 96


def qwen_template() -> str:
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()


@pytest.fixture(scope="module")
def chat_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from launcher.ranks.tokenizer_stage import save_tokenizer

    folder = tmp_path_factory.mktemp("chat-tok") / "tokenizer"
    tokenizer = make_tokenizer(folder, extra=CHATML)
    tokenizer.chat_template = qwen_template()
    save_tokenizer(tokenizer, folder)
    return folder


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high))).capitalize() + "."


def conversation(rng: random.Random) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": words(rng, 2, 5)}] if rng.random() < 0.3 else []
    for _ in range(rng.randint(1, 2)):
        turns.append({"role": "user", "content": words(rng, 2, 10)})
        turns.append({"role": "assistant", "content": words(rng, 2, 14)})
    return turns


def rows_of(kind: str, count: int = 60, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for _ in range(count):
        if kind == "messages":
            out.append({"messages": conversation(rng)})
        elif kind == "sharegpt":
            turns = conversation(rng)
            out.append(
                {"conversations": [{"from": t["role"], "value": t["content"]} for t in turns]}
            )
        elif kind == "prompt_completion":
            out.append({"prompt": words(rng, 2, 12), "completion": " " + words(rng, 2, 12)})
        else:  # conversational prompt-completion
            turns = conversation(rng)
            out.append({"prompt": turns[:-1], "completion": turns[-1:]})
    return out


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def recipe_with(train: Path, **data: Any) -> Recipe:
    fields = {"files": {"train": str(train)}, "max_length": MAX_LENGTH, "shuffle": False, **data}
    return Recipe.model_validate({"name": "chat", "task": "sft", "data": fields})


def trl_rows(
    tokenizer_dir: Path, rows: list[dict[str, Any]], tmp_path: Path, **config: Any
) -> list[dict[str, Any]]:
    """The rows TRL's own SFTTrainer prepares from the raw samples."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from launcher.ranks.tokenizer_stage import load_saved_tokenizer

    tokenizer = load_saved_tokenizer(tokenizer_dir)
    model = tiny_mistral(len(tokenizer))
    args = SFTConfig(
        output_dir=str(tmp_path / "trl"),
        max_length=MAX_LENGTH,
        report_to="none",
        use_cpu=True,
        bf16=False,
        **config,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    return trainer.train_dataset.to_list()


CASES = {
    # name: (rows, recipe data keys, SFTConfig keys)
    "messages-all-packed": ("messages", {}, {"packing": True}),
    "messages-assistant-packed": (
        "messages",
        {"loss_on": "assistant"},
        {"packing": True, "assistant_only_loss": True},
    ),
    "messages-assistant-cut": (
        "messages",
        {"loss_on": "assistant", "packing": False},
        {"packing": False, "assistant_only_loss": True},
    ),
    "sharegpt-all-cut": (
        "sharegpt",
        {"columns": {"messages": "conversations"}, "packing": False},
        {"packing": False},
    ),
    "prompt-completion-packed": ("prompt_completion", {}, {"packing": True}),
    "prompt-completion-all-cut": (
        "prompt_completion",
        {"loss_on": "all", "packing": False},
        {"packing": False, "completion_only_loss": False},
    ),
    "chat-prompt-completion-cut": (
        "chat_prompt_completion",
        {"packing": False},
        {"packing": False},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rows_are_trls_own(case: str, chat_tokenizer_dir: Path, tmp_path: Path) -> None:
    kind, recipe_keys, trl_config = CASES[case]
    rows = rows_of(kind)
    recipe = recipe_with(write_rows(tmp_path / "train.jsonl", rows), **recipe_keys)
    ours = run_prepare(recipe, chat_tokenizer_dir, tmp_path / "cache").splits["train"].to_list()
    theirs = trl_rows(chat_tokenizer_dir, rows, tmp_path, **trl_config)
    assert len(ours) == len(theirs) > 0
    pairs = kind in ("prompt_completion", "chat_prompt_completion")
    masked = "assistant" in case or (pairs and "-all-" not in case)  # loss on answers only
    for mine, trl in zip(ours, theirs, strict=True):
        assert mine["input_ids"] == trl["input_ids"]
        assert mine.get("labels", mine["input_ids"]) == trl["labels"]
        assert mine.get("seq_lengths") == trl.get("seq_lengths")
    labels = [label for row in theirs for label in row["labels"]]
    assert (IGNORED in labels) == masked, "the case checks the masks it means to"


def test_assistant_labels_are_exactly_the_answers(chat_tokenizer_dir: Path, tmp_path: Path) -> None:
    """Packed rows with the loss on assistant turns: the labelled tokens of each packed sample
    decode to that sample's assistant answers, each followed by its end of turn, and nothing
    else (no system, user or template text)."""
    from launcher.ranks.tokenizer_stage import load_saved_tokenizer

    rows = rows_of("messages", count=24, seed=5)
    train = write_rows(tmp_path / "train.jsonl", rows)
    recipe = recipe_with(train, loss_on="assistant", max_length=4 * MAX_LENGTH)
    packed = run_prepare(recipe, chat_tokenizer_dir, tmp_path / "cache").splits["train"]
    tokenizer = load_saved_tokenizer(chat_tokenizer_dir)
    expected = sorted(
        # The training template's generation block: the line break after the role, the answer,
        # its end of turn.
        "".join(
            f"\n{t['content']}<|im_end|>\n" for t in row["messages"] if t["role"] == "assistant"
        )
        for row in rows
    )
    got = []
    for row in packed.to_list():
        start = 0
        assert sum(row["seq_lengths"]) == len(row["input_ids"]) <= 4 * MAX_LENGTH
        for length in row["seq_lengths"]:
            labels = row["labels"][start : start + length]
            kept = [token for token in labels if token != IGNORED]
            got.append(tokenizer.decode(kept))
            start += length
    assert len(packed) < len(rows), "several samples share a row"
    assert sorted(got) == expected


def test_format_loss_and_mapping_enter_the_cache_key(
    chat_tokenizer_dir: Path, tmp_path: Path
) -> None:
    train = write_rows(tmp_path / "train.jsonl", rows_of("prompt_completion", count=4))

    def key(**data: Any) -> str:
        def no_raw() -> dict[str, Any]:
            raise AssertionError("local files are keyed without loading them")

        return cache_key(recipe_with(train, **data), chat_tokenizer_dir, no_raw)[0]

    keys = {
        key(),
        key(loss_on="all"),
        key(sample_format="prompt_completion"),
        key(columns={"prompt": "prompt", "completion": "completion"}),
        key(template={"prompt": "Q: {prompt}", "completion": "{completion}"}),
    }
    assert len(keys) == 5


def test_a_template_mapping_makes_prompt_completion_pairs(
    chat_tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Alpaca-style rows through `data.template: {prompt, completion}`: the loss is on the
    filled completion only."""
    from launcher.ranks.tokenizer_stage import load_saved_tokenizer

    rows = [{"instruction": f"Say {word}.", "output": f"{word} {word}"} for word in WORDS[:12]]
    template = {
        "prompt": "### Instruction:\n{instruction}\n### Response:\n",
        "completion": "{output}",
    }
    recipe = recipe_with(
        write_rows(tmp_path / "alpaca.jsonl", rows), template=template, packing=False
    )
    prepared = run_prepare(recipe, chat_tokenizer_dir, tmp_path / "cache").splits["train"]
    tokenizer = load_saved_tokenizer(chat_tokenizer_dir)
    answers = [
        tokenizer.decode([t for t in row["labels"] if t != IGNORED]) for row in prepared.to_list()
    ]
    assert answers == [row["output"] + "</s>" for row in rows]


@pytest.mark.parametrize(
    ("keys", "kind", "message"),
    [
        ({"loss_on": "completion"}, "messages", "'completion' needs prompt-completion samples"),
        ({"columns": {"messages": "chat"}}, "messages", "data.columns.messages: 'chat'"),
        ({"sample_format": "messages"}, "prompt_completion", "data.columns.messages"),
    ],
)
def test_mistakes_name_the_key(
    keys: dict[str, Any], kind: str, message: str, chat_tokenizer_dir: Path, tmp_path: Path
) -> None:
    recipe = recipe_with(write_rows(tmp_path / "train.jsonl", rows_of(kind, count=4)), **keys)
    with pytest.raises(Exception) as error:
        run_prepare(recipe, chat_tokenizer_dir, tmp_path / "cache")
    assert message in str(error.value)
    assert isinstance(error.value, SampleError) or "DataOptionError" in type(error.value).__name__


def test_messages_without_a_chat_template_say_where_to_give_one(tmp_path: Path) -> None:
    folder = tmp_path / "tokenizer"
    make_tokenizer(folder)
    recipe = recipe_with(write_rows(tmp_path / "train.jsonl", rows_of("messages", count=4)))
    with pytest.raises(SampleError, match="tokenizer.chat_template: the tokenizer has no chat"):
        run_prepare(recipe, folder, tmp_path / "cache")


def test_sharegpt_roles_read_as_user_and_assistant(
    chat_tokenizer_dir: Path, tmp_path: Path
) -> None:
    """ShareGPT's `human`/`gpt` turns give the rows (and the answer masks) of the same
    conversation written with `user`/`assistant` (TRL renames the keys only; templates and masks
    know the standard roles)."""
    chats = rows_of("messages", count=12, seed=7)
    roles = {"user": "human", "assistant": "gpt", "system": "system"}
    sharegpt = [
        {
            "conversations": [
                {"from": roles[t["role"]], "value": t["content"]} for t in row["messages"]
            ]
        }
        for row in chats
    ]
    prepared = []
    for name, rows, keys in (
        ("chats", chats, {}),
        ("sharegpt", sharegpt, {"columns": {"messages": "conversations"}}),
    ):
        recipe = recipe_with(
            write_rows(tmp_path / f"{name}.jsonl", rows), loss_on="assistant", **keys
        )
        prepared.append(run_prepare(recipe, chat_tokenizer_dir, tmp_path / name).splits["train"])
    assert prepared[0].to_list() == prepared[1].to_list()
