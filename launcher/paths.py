"""One rule for "is this a local path or a hub id?", for the launcher and the ranks alike, and
one for where the launcher keeps its per-user caches.

A recipe names models, tokenizers and datasets either as hub ids (``org/name``) or as local
folders. The preflight before a launch and the ranks that load them must read a name the same way,
or a typo passes one and fails the other.
"""

from __future__ import annotations

import os
from pathlib import Path

HUB_ID_HINT = "hub ids look like org/name"


def cache_home() -> Path:
    """``$LAUNCHER_CACHE``, else ``$XDG_CACHE_HOME/launcher`` (``~/.cache/launcher``): the
    launcher's caches (prepared data, library field lists), per user."""
    if os.environ.get("LAUNCHER_CACHE"):
        return Path(os.environ["LAUNCHER_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "launcher"


def missing_folder(name: str) -> str | None:
    """Why ``name`` (model or tokenizer) is a local folder that is not there; None when it is
    there, or when it reads as a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return None
    if path.exists():
        return f"{name} is a file; from_pretrained needs a folder (or a hub id: {HUB_ID_HINT})"
    reason = local_path_reason(name)
    if reason is None:
        return None
    return f"{name} does not exist (a local folder, since it {reason}); {HUB_ID_HINT}"


def local_path_reason(name: str) -> str | None:
    """Why a missing ``name`` must be a local path, not a hub id; None when it may be a hub id.

    A hub id is ``name`` or ``org/name``: one '/' at most, never at the start. ``org/name`` is
    ambiguous when ``org`` is also a folder here; the folder wins, as it would for anyone
    reading the recipe in this directory.
    """
    if name.startswith("~"):
        return "starts with ~"
    for prefix in ("/", "./", "../"):
        if name.startswith(prefix):
            return f"starts with {prefix}"
    if name in (".", ".."):
        return f"is {name}"
    if name.count("/") > 1:
        return "has more than one '/'"
    if os.sep != "/" and os.sep in name:
        return f"contains {os.sep}"
    head, slash, _ = name.partition("/")
    if slash and Path(head).is_dir():
        return f"starts with {head}/, a folder here"
    return None


def is_local_path(name: str) -> bool:
    """True for a name that can only be a local path (absolute, relative, ``~``, deeper than
    ``org/name``, or under a folder of that name here); False when it may be a hub id."""
    return local_path_reason(name) is not None
