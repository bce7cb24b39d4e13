"""The commands of ``launcher``: one module per command, each one typed function.

A command's function is its whole interface: its parameters become the command line (positional
parameters are arguments, keyword-only ones are ``--options``), its docstring's first line is the
help, and its ``Args:`` section documents the options (``launcher/cli.py`` builds the parser). Each
module imports nothing heavy at import time: ``--help``, ``plan``, ``submit`` and ``status`` run on
login nodes. Library modules (``export``, ``doctor``, ``plot``) take values, never a namespace.
"""

from __future__ import annotations

# Command name -> the module whose function of that name runs it, in the order --help lists them.
COMMANDS: dict[str, str] = {
    name: f"launcher.commands.{name}"
    for name in (
        "recipes",
        "plan",
        "run",
        "submit",
        "sbatch",
        "status",
        "logs",
        "cancel",
        "export",
        "predict",
        "tokenizer",
        "doctor",
        "plot",
    )
}
