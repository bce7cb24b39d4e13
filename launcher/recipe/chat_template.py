"""``tokenizer.chat_template``: Jinja text, or the path of a ``.jinja``/``.j2`` file holding it.

The plan checks that a file named there exists, that the template reads ``messages`` (a typo in a
path, or a file name without the suffix, would otherwise be taken for a template that renders
that name for every conversation: training on nothing, silently) and that it parses as Jinja
(with transformers' ``{% generation %}`` tag); the tokenizer stage reads it and saves it with the
run's tokenizer, so that predict and export render chats the same way.
"""

from __future__ import annotations

from pathlib import Path

from launcher.errors import quoted

TEMPLATE_SUFFIXES = (".jinja", ".j2")


def names_a_file(value: str) -> bool:
    """Whether ``value`` is a path (one line ending in ``.jinja``/``.j2``), not the template."""
    return "\n" not in value and value.strip().endswith(TEMPLATE_SUFFIXES)


def template_problem(value: str) -> str | None:
    """What is wrong with ``value``, or None."""
    if not names_a_file(value):
        if not value.strip():
            return "is empty"
        return text_problem(value, "")
    path = Path(value.strip()).expanduser()
    if not path.is_file():
        return f"{value.strip()} does not exist (or is not a file)"
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return f"{path} is empty"
    return text_problem(text, f"{path}: ")


def text_problem(text: str, where: str) -> str | None:
    """A template that never reads the conversation, or that is not Jinja."""
    if "messages" not in text:
        advice = (
            ""
            if where
            else (
                "; give the Jinja template itself, or the path of a .jinja or .j2 file holding it"
            )
        )
        return (
            f"{where}{quoted(text)} does not read `messages`, so it would render the same text for "
            f"every conversation{advice}"
        )
    import jinja2  # only for recipes with a template (about 35 ms)

    try:
        template_environment().parse(text)
    except jinja2.TemplateSyntaxError as error:
        return f"{where}not a Jinja template: line {error.lineno}: {error.message}"
    return None


def template_environment():  # type: ignore[no-untyped-def]
    """A Jinja environment that parses what transformers' chat templates may use: loop controls
    and the ``{% generation %}`` block that marks the assistant's answers."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):  # type: ignore[no-untyped-def]
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return jinja2.Environment(extensions=[Generation, "jinja2.ext.loopcontrols"])


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
