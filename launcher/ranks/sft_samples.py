"""SFT samples as TRL 1.16's ``SFTTrainer._prepare_dataset`` makes them, done here so that the
launcher can cache them (the trainer then gets ``skip_prepare_dataset``): plain text,
conversations (``messages``) and prompt-completion pairs, with the loss on all tokens, on the
completions, or on the assistant turns.

TRL's steps, kept as they are (tests/ranks/test_sft_samples.py compares the rows with TRL's own
preparation of the same samples, token for token, label for label):

- text: EOS appended unless the text ends with it; tokenized with the tokenizer's defaults.
- messages: ShareGPT's ``from``/``value`` turned into ``role``/``content``; rendered and
  tokenized by the chat template; with the loss on assistant turns, the template's
  ``{% generation %}`` blocks give the mask (a template without them is swapped for TRL's
  training version of it, which TRL knows for the common families).
- prompt-completion: the prompt alone and the prompt with its completion are tokenized (text: EOS
  appended to the completion; messages: the prompt with the generation prompt); the completion
  starts where the two diverge.
- labels: the token id where every mask that applies is 1, else -100 (the completion mask only
  with the loss on completions). Without packing, samples are cut to ``max_length`` and those left
  with no label dropped; with packing, ``pack_dataset`` (bfd) packs ids and labels alike.

Plain text with the loss on all tokens keeps no ``labels`` column (TRL's collator then uses the
ids): the rows of recipes written before these formats, and their cache keys, stay as they were.
"""

from __future__ import annotations

from typing import Any

from launcher.errors import LauncherError
from launcher.recipe.schema import DataSection

IGNORED = -100  # the label of a token the loss skips
# ShareGPT's keys and role names, and the ones chat templates read. TRL's
# ``maybe_convert_to_chatml`` renames the keys only, leaving `human` and `gpt`, which templates
# that test `role == "user"` skip or render as unknown roles, and which no assistant mask covers;
# the roles are renamed too (as axolotl and LLaMA-Factory read ShareGPT).
SHAREGPT_KEYS = {"from": "role", "value": "content"}
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant"}


class SampleError(LauncherError):
    exit_code = 2


def sample_format(columns: list[str], data: DataSection) -> str:
    """``text``, ``messages`` or ``prompt_completion``: the recipe's, or read from the columns the
    way TRL reads them (``messages``, else ``prompt`` with ``completion``, else text)."""
    if data.sample_format != "auto":
        return data.sample_format
    if "messages" in columns:
        return "messages"
    if "prompt" in columns and "completion" in columns:
        return "prompt_completion"
    return "text"


def loss_on(fmt: str, data: DataSection) -> str:
    """``all``, ``completion`` or ``assistant``; ``auto`` is TRL's default for the format."""
    if data.loss_on != "auto":
        return data.loss_on
    return "completion" if fmt == "prompt_completion" else "all"


def require_format_columns(split: Any, fmt: str, data: DataSection, name: str) -> None:
    """The columns the format reads, named by the recipe key that would map them."""
    needed = {
        "text": [data.text_column],
        "messages": ["messages"],
        "prompt_completion": ["prompt", "completion"],
    }[fmt]
    missing = [column for column in needed if column not in split.column_names]
    if not missing:
        return
    column = missing[0]
    key = "data.text_column" if fmt == "text" else f"data.columns.{column}"
    raise SampleError(
        f"{key}: the {name} split has no {column!r} column, which {fmt} samples need "
        f"(columns: {', '.join(split.column_names)}); map the data's own name with {key}"
    )


def check_loss_on(fmt: str, loss: str, conversational: bool) -> None:
    """The masks each format can give."""
    if loss == "completion" and fmt != "prompt_completion":
        raise SampleError(
            f"data.loss_on: 'completion' needs prompt-completion samples, and these are {fmt} "
            "(map a prompt and a completion column with data.columns, or a data.template "
            "mapping)"
        )
    if loss == "assistant" and not conversational:
        raise SampleError(
            "data.loss_on: 'assistant' needs conversations (messages, or a prompt and a "
            f"completion written as messages), and these are plain-text {fmt} samples"
        )


def training_template(tokenizer: Any, loss: str) -> str | None:
    """The chat template that renders samples, when it is not the tokenizer's own: TRL's
    training version of it when the loss is on assistant turns and it lacks generation
    markers (``SFTTrainer.chat_template``)."""
    if loss != "assistant":
        return None
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if not tokenizer.chat_template:
        raise SampleError(no_template_message())
    if has_generation_markers(tokenizer.chat_template):
        return None
    try:
        return get_training_chat_template(tokenizer)
    except ValueError:
        raise SampleError(
            "data.loss_on: 'assistant' needs a chat template that marks the assistant's "
            "tokens with {% generation %} ... {% endgeneration %}; the tokenizer's has none and "
            "TRL knows no training version of it. Give one in tokenizer.chat_template, or use "
            "data.loss_on: all"
        ) from None


def no_template_message() -> str:
    return (
        "tokenizer.chat_template: the tokenizer has no chat template to render messages; give "
        "one (Jinja text, or the path of a .jinja file)"
    )


def sft_rows(split: Any, data: DataSection, tokenizer: Any, name: str) -> Any:
    """The split as TRL would prepare it: ``input_ids`` (int32), ``labels`` where a mask applies,
    truncated or packed (``launcher.ranks.data.pack_rows``)."""
    import datasets

    from launcher.ranks.data import pack_rows, processes

    fmt = sample_format(split.column_names, data)
    require_format_columns(split, fmt, data, name)
    first = split[0] if len(split) else {}
    conversational = fmt == "messages" or (
        fmt == "prompt_completion" and isinstance(first.get("prompt"), list)
    )
    loss = loss_on(fmt, data)
    check_loss_on(fmt, loss, conversational)
    if conversational and not tokenizer.chat_template:
        raise SampleError(no_template_message())
    if not conversational and tokenizer.eos_token is None:
        raise SampleError(
            "tokenizer: it has no EOS token, which SFT appends to every sample; add one "
            "(tokenizer.special_tokens, or `</s>` among tokenizer.train.special_tokens)"
        )
    template = training_template(tokenizer, loss)
    masked = loss != "all"
    encode = SampleEncoder(tokenizer, fmt, data.text_column, loss, template, name)
    limit = None if data.packing else data.max_length
    ids = datasets.List(datasets.Value("int32"))
    features = datasets.Features({"input_ids": ids, **({"labels": ids} if masked else {})})

    def encode_batch(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        rows = [
            dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)
        ]
        encoded = [encode(row) for row in rows]
        out = {"input_ids": [row["input_ids"][:limit] for row in encoded]}
        if masked:
            out["labels"] = [row["labels"][:limit] for row in encoded]
        return out

    rows = split.map(
        encode_batch,
        batched=True,
        remove_columns=split.column_names,
        features=features,
        num_proc=processes(data, len(split)),
        desc=f"tokenizing {name} ({fmt}, loss on {loss})",
    )
    if data.packing:
        return pack_rows(rows, data.max_length, processes(data, len(rows)), name)
    if masked:  # TRL drops the samples truncation left without a label
        return rows.filter(
            lambda batch: [any(x != IGNORED for x in labels) for labels in batch["labels"]],
            batched=True,
            desc=f"dropping {name} samples with nothing to learn",
        )
    return rows.filter(
        lambda batch: [len(ids) > 0 for ids in batch["input_ids"]],
        batched=True,
        desc=f"dropping empty {name} samples",
    )


class SampleEncoder:
    """One sample's ids and labels, by TRL's ``tokenize_fn`` and ``build_labels``."""

    def __init__(
        self, tokenizer: Any, fmt: str, text_column: str, loss: str, template: str | None, name: str
    ):
        self.tokenizer, self.fmt, self.text_column = tokenizer, fmt, text_column
        self.loss, self.template, self.name = loss, template, name
        self.eos = tokenizer.eos_token

    def __call__(self, row: dict[str, Any]) -> dict[str, list[int]]:
        if self.fmt == "text":
            return {"input_ids": self.text_ids(row[self.text_column])}
        if self.fmt == "messages":
            return self.conversation(row)
        return self.prompt_completion(row)

    def text_ids(self, text: str) -> list[int]:
        if not text.endswith(self.eos):
            text += self.eos
        return list(self.tokenizer(text)["input_ids"])

    def chat(self, messages: list[dict[str, Any]], row: dict[str, Any], **options: Any) -> Any:
        tools = row.get("tools")
        if isinstance(tools, str):
            import json

            tools = json.loads(tools)
        return self.tokenizer.apply_chat_template(
            chatml(messages),
            tokenize=True,
            return_dict=True,
            chat_template=self.template,
            tools=tools,
            **options,
        )

    def conversation(self, row: dict[str, Any]) -> dict[str, list[int]]:
        assistant = self.loss == "assistant"
        rendered = self.chat(row["messages"], row, return_assistant_tokens_mask=assistant)
        ids = list(rendered["input_ids"])
        if not assistant:
            return {"input_ids": ids}
        return {"input_ids": ids, "labels": self.labels(ids, rendered["assistant_masks"])}

    def prompt_completion(self, row: dict[str, Any]) -> dict[str, list[int]]:
        prompt, completion = row["prompt"], row["completion"]
        masks: list[list[int]] = []
        if isinstance(prompt, list):
            prompt_ids = self.chat(prompt, row, add_generation_prompt=True)["input_ids"]
            assistant = self.loss == "assistant"
            rendered = self.chat(prompt + completion, row, return_assistant_tokens_mask=assistant)
            ids = list(rendered["input_ids"])
            if assistant:
                masks.append(rendered["assistant_masks"])
        else:
            if not completion.endswith(self.eos):
                completion += self.eos
            prompt_ids = self.tokenizer(prompt)["input_ids"]
            ids = list(self.tokenizer(prompt + completion)["input_ids"])
        if self.loss == "completion":
            from trl.data_utils import common_prefix_length

            start = common_prefix_length(prompt_ids, ids)
            masks.append([0] * start + [1] * (len(ids) - start))
        if self.loss == "all":
            return {"input_ids": ids}
        return {"input_ids": ids, "labels": self.labels(ids, *masks)}

    def labels(self, ids: list[int], *masks: list[int]) -> list[int]:
        if self.loss == "assistant" and 1 not in masks[0]:
            raise SampleError(
                f"data.loss_on: 'assistant', but a {self.name} sample has no assistant tokens: "
                "the chat template marks none with {% generation %} (or the sample has no "
                "assistant turn). Fix the template (tokenizer.chat_template) or use "
                "data.loss_on: all"
            )
        return [token if all(bits) else IGNORED for token, *bits in zip(ids, *masks, strict=False)]


def chatml(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with ShareGPT's ``from``/``value`` keys renamed to ``role``/``content``, and its
    ``human``/``gpt`` roles to ``user``/``assistant``."""
    out = []
    for message in messages:
        renamed = {SHAREGPT_KEYS.get(key, key): value for key, value in message.items()}
        if "from" in message:
            renamed["role"] = SHAREGPT_ROLES.get(renamed.get("role"), renamed.get("role"))
        out.append(renamed)
    return out
