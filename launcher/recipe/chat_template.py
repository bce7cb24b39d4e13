"""``tokenizer.chat_template``: Jinja text, or the path of a ``.jinja``/``.j2`` file holding it.

Standard library only: the plan checks that a file named there exists (a typo in a path would
otherwise be taken for a template that renders the path itself); the tokenizer stage reads it and
saves it with the run's tokenizer, so that predict and export render chats the same way.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_SUFFIXES = (".jinja", ".j2")


def names_a_file(value: str) -> bool:
    """Whether ``value`` is a path (one line ending in ``.jinja``/``.j2``), not the template."""
    return "\n" not in value and value.strip().endswith(TEMPLATE_SUFFIXES)


def template_problem(value: str) -> str | None:
    """What is wrong with ``value``, or None."""
    if not names_a_file(value):
        return None if value.strip() else "is empty"
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        return f"{value.strip()} does not exist (or is not a file)"
    if not path.read_text(encoding="utf-8", errors="replace").strip():
        return f"{path} is empty"
    return None


def chat_template_text(value: str) -> str:
    """The template itself: the file's text when ``value`` names one."""
    if names_a_file(value):
        return Path(value.strip()).expanduser().read_text(encoding="utf-8")
    return value


# ChatML (Qwen's and many fine-tunes' format) with `{% generation %}` around each answer, so that
# the loss can be on assistant turns. A smoke run gives it to the stand-in tokenizer it trains
# when the recipe's chat data would be rendered by the model's own template (not fetched then).
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + '<|im_end|>\\n' }}{%- endgeneration %}"
    "{%- else %}{{- message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
