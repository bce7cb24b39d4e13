"""The ``launcher`` command line, built from the command functions of ``launcher/commands/``.

    launcher recipes
    launcher plan recipes/sft-mistral.yaml training.learning_rate=2e-4 --smoke
    launcher run recipes/sft-mistral.yaml --smoke
    launcher tokenizer recipes/mlm-scratch.yaml -o my-tokenizer
    launcher submit recipes/sft-mistral.yaml --cluster dev --nodes 2 --smoke
    launcher status runs/sft-mistral-smoke
    launcher plot runs/sft-mistral-smoke -o loss.png
    launcher doctor

Each command is one typed function: positional parameters become arguments (optional where they
have a default), keyword-only ones ``--options`` (``bool``: a flag), the docstring's first line the
command's help and its ``Args:`` lines the options' help. Login nodes are slow and shared: this
module imports only the command that runs (all of them for ``--help``), and the commands import
torch and the like only inside.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import launcher
from launcher.commands import COMMANDS
from launcher.errors import LauncherError

# Help for the parameters several commands share; a command's own Args: line wins.
COMMON_HELP = {
    "recipe": "recipe file, or the name of a shipped recipe",
    "overrides": "e.g. training.max_steps=10",
    "smoke": "tiny, offline, CPU-sized version",
    "run_dir": "run directory (default: runs/NAME)",
    "cluster": "cluster profile (cluster/NAME.yaml)",
    "nodes": "nodes (default: the recipe's, else the profile's)",
    "from_scratch": "start over: an existing run directory is renamed aside, not resumed",
}
SHORT_FLAGS = {"output": "-o", "follow": "-f"}
METAVARS = {
    "overrides": "key=value",
    "checkpoint": "STEP",
    "cluster": "PROFILE",
    "copy": "NAME",
    "destination": "DEST.yaml",
    "input": "FILE",
    "source": "RUN_DIR_OR_MODEL_DIR",
    "batch_size": "N",
    "top_k": "K",
    "max_new_tokens": "N",
}


def command_function(name: str) -> Callable[..., int]:
    """The function that runs command ``name`` (importing its module only now)."""
    return getattr(importlib.import_module(COMMANDS[name]), name)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, just that command's part of it (a command line that
    names its command needs no other command's module or parser)."""
    parser = argparse.ArgumentParser(
        prog="launcher",
        description="Resolve a YAML training recipe into a checked plan and run it.",
    )
    parser.add_argument("--version", action="version", version=f"launcher {launcher.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if only is None or name == only:
            function = command_function(name)
            summary = summary_line(function)
            sub = commands.add_parser(name, help=summary, description=summary)
            add_parameters(sub, function)
            sub.set_defaults(function=function)
    return parser


def summary_line(function: Callable[..., Any]) -> str:
    return (inspect.getdoc(function) or "").splitlines()[0].rstrip(".")


def parameter_help(function: Callable[..., Any]) -> dict[str, str]:
    """The ``name: text`` lines of the docstring's ``Args:`` section."""
    lines = (inspect.getdoc(function) or "").splitlines()
    if "Args:" not in lines:
        return {}
    documented: dict[str, str] = {}
    for line in lines[lines.index("Args:") + 1 :]:
        name, colon, text = line.strip().partition(": ")
        if not colon or " " in name:
            break
        documented[name] = text
    return documented


def add_parameters(parser: argparse.ArgumentParser, function: Callable[..., Any]) -> None:
    """One argument or option per parameter of ``function``, typed by its annotation."""
    hints = typing.get_type_hints(function)
    documented = parameter_help(function)
    for name, parameter in inspect.signature(function).parameters.items():
        kind = hints[name]
        options: dict[str, Any] = {"help": documented.get(name) or COMMON_HELP.get(name)}
        if name in METAVARS:
            options["metavar"] = METAVARS[name]
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            if typing.get_origin(kind) is list:
                parser.add_argument(name, nargs="*", default=[], **options)
            elif parameter.default is not inspect.Parameter.empty:
                parser.add_argument(
                    name, nargs="?", type=converter(kind), default=parameter.default, **options
                )
            else:
                parser.add_argument(name, type=converter(kind), **options)
            continue
        flags = [
            *([SHORT_FLAGS[name]] if name in SHORT_FLAGS else []),
            f"--{name.replace('_', '-')}",
        ]
        if kind is bool:
            parser.add_argument(*flags, dest=name, action="store_true", **options)
            continue
        required = parameter.default is inspect.Parameter.empty
        default = None if required else parameter.default
        parser.add_argument(
            *flags, dest=name, type=converter(kind), required=required, default=default, **options
        )


def converter(kind: Any) -> Callable[[str], Any]:
    """``int``, ``str`` or ``Path`` for an annotation, ``X | None`` included."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (kind,) = [member for member in typing.get_args(kind) if member is not type(None)]
    if kind not in (int, str, Path):
        raise TypeError(f"no command-line type for {kind!r}")
    return kind


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`run r.yaml --smoke a.b=1`), which argparse leaves unparsed.
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    skip_pydantic_plugins()
    values = {key: value for key, value in vars(args).items() if key not in ("command", "function")}
    try:
        return int(args.function(**values) or 0)
    except LauncherError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `launcher plan ... | head`: the reader has what it wanted. Python would report the
        # pipe again when it flushes stdout at exit, so stdout now goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE


def skip_pydantic_plugins() -> None:
    """Spare every command pydantic's plugin search, which the recipe schema has no use for.

    The first model class pydantic builds looks for plugins in the entry points of every
    installed distribution (benchmarks/RESULTS.md has what that costs). A value the user set (a
    list of plugins to skip) is kept; the ranks inherit the setting.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
