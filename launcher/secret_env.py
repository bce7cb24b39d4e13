"""Secrets (tokens, API keys): which environment variables hold them, and hiding their values.

Secrets reach the ranks through the environment the launcher inherited, and nothing else: no plan
file, command line, batch script or pickled task holds one. As a second line of defence, text the
launcher and the ranks write to their logs passes through :func:`mask`, which replaces any secret
value it finds with ``***`` (a library that prints its environment would otherwise leak it).
Imports nothing heavy: the launcher uses it on login nodes too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

# Always secret, whatever the recipe says (HUGGING_FACE_HUB_TOKEN is huggingface_hub's old name;
# MLflow's client signs in to a tracking server with the last two).
ALWAYS_SECRET = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "WANDB_API_KEY",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
)
# Shorter values are not masked: they cannot be real tokens, and replacing every "1" or "true" in
# the logs would garble them.
MIN_MASKED_LENGTH = 6
HIDDEN = "***"


def secret_names(declared: Iterable[str] = ()) -> list[str]:
    """The always-secret names plus the recipe's ``secrets``, each once, in that order."""
    return list(dict.fromkeys([*ALWAYS_SECRET, *declared]))


def secret_values(
    declared: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> list[str]:
    """The values of the secrets that are set, longest first (so a value that contains another
    one is hidden whole). ``environ`` defaults to ``os.environ`` as it is at the call (a library
    may have replaced the object since import)."""
    environ = os.environ if environ is None else environ
    values = {environ[name] for name in secret_names(declared) if environ.get(name)}
    return sorted((v for v in values if len(v) >= MIN_MASKED_LENGTH), key=len, reverse=True)


def mask(text: str, values: Iterable[str]) -> str:
    for value in values:
        if value in text:
            text = text.replace(value, HIDDEN)
    return text


def presence_line(declared: Iterable[str], environ: Mapping[str, str] | None = None) -> str:
    """Which secrets this process received, by name only: proof that they arrived, never what
    they are."""
    environ = os.environ if environ is None else environ
    declared = list(declared)
    present = [name for name in secret_names(declared) if environ.get(name)]
    missing = [name for name in declared if not environ.get(name)]
    line = f"secrets in the environment: {', '.join(present) or 'none'} (values never written)"
    if missing:
        line += f"; declared but not set: {', '.join(missing)}"
    return line
