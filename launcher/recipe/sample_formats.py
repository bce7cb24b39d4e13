"""SFT's sample format as the recipe says it, before any data is read (standard library only):
set in ``data.sample_format``, implied by the column mapping or a prompt/completion template, or
left to the rank, which reads it from the data's columns (``auto``).

The plan describes it, ``--smoke`` generates rows of that format, and the checks refuse masks the
format cannot give; the rank resolves ``auto`` (``launcher.ranks.sft_samples``).
"""

from __future__ import annotations

from launcher.recipe.schema import DataSection


def planned_format(data: DataSection) -> str:
    """``text``, ``messages``, ``prompt_completion``, or ``auto`` (only the data can tell)."""
    if data.sample_format != "auto":
        return data.sample_format
    mapped = set(data.columns or {})
    if isinstance(data.template, dict):
        mapped |= set(data.template)
    if "messages" in mapped:
        return "messages"
    if {"prompt", "completion"} <= mapped:
        return "prompt_completion"
    if isinstance(data.template, str):
        return "text"
    return "auto"


def planned_loss(data: DataSection) -> str:
    """``all``, ``completion``, ``assistant``, or ``auto`` while the format is unknown."""
    if data.loss_on != "auto":
        return data.loss_on
    fmt = planned_format(data)
    if fmt == "auto":
        return "auto"
    return "completion" if fmt == "prompt_completion" else "all"


def renders_chats(data: DataSection) -> bool:
    """Whether the samples go through a chat template (conversations, or the loss on assistant
    turns, which only conversations have)."""
    return planned_format(data) == "messages" or data.loss_on == "assistant"
