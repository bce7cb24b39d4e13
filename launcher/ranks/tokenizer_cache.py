"""Trained tokenizers, cached: the same recipe on the same text gives the same tokenizer.

The ``tokenizers`` library's WordPiece trainer (and BPE with a continuing-subword prefix) is not
deterministic from run to run (huggingface/tokenizers#1794: ties between equally frequent merges
are broken in hash-map order), so two trainings of one recipe give vocabularies that differ in a
few tokens, every id after them moves, and the data cache, keyed by the tokenizer's files, misses.
A trained tokenizer is therefore kept in ``CACHE/tokenizers/KEY/`` (``save_pretrained``), where
KEY hashes everything that shapes it: the training settings (preset or pipeline), the content of
the training text (or of the text files a pipeline trains on), the tokenizer a ``retrain`` starts
from, and the library versions. A second build of the same inputs loads that copy instead of
training again.

The copy is written into ``KEY.partial-HOST-PID/`` and renamed to ``KEY/`` in one step (as the
data cache does, whose helpers these are), so a killed training leaves no half-written tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from launcher.paths import cache_home
from launcher.ranks.data_cache import (
    discard_cached_copy,
    file_digest,
    remove_dead_partials,
)
from launcher.recipe.schema import TrainedTokenizerSection

# Bump when training changes what it gives for the same settings: older copies stop matching.
CACHE_VERSION = 1
DESCRIPTION = "key.json"


def cache_root() -> Path:
    """``$LAUNCHER_CACHE/tokenizers``, else ``~/.cache/launcher/tokenizers``: per user."""
    return cache_home() / "tokenizers"


def text_digest(texts: Iterable[str]) -> str:
    """sha256 of the texts in order, each length-prefixed (so ``["ab"]`` and ``["a", "b"]``
    differ)."""
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(f"{len(data)}:".encode())
        digest.update(data)
    return digest.hexdigest()


def files_digest(files: list[str]) -> list[str]:
    """The content digests of the text files a pipeline trains on, in order."""
    return [file_digest(Path(path)) for path in files]


def cache_key(
    settings: TrainedTokenizerSection, text: dict[str, Any], base: str | None
) -> tuple[str, dict[str, Any]]:
    """``ALGORITHM-HASH`` and the description it hashes (kept as ``key.json`` beside the copy).

    ``text`` says what was trained on (a digest of the texts, or of the files); ``base`` is a
    digest of the tokenizer a ``retrain`` starts from."""
    import tokenizers
    import transformers

    description = {
        "version": CACHE_VERSION,
        "settings": settings.model_dump(mode="json"),
        "text": text,
        "base": base,
        "libraries": {
            "tokenizers": tokenizers.__version__,
            "transformers": transformers.__version__,
        },
    }
    encoded = json.dumps(description, sort_keys=True).encode()
    return f"{settings.algorithm}-{hashlib.sha256(encoded).hexdigest()[:16]}", description


def load_cached(folder: Path, load: Callable[[Path], Any]) -> Any | None:
    """The cached tokenizer, or None when there is no complete copy (or it cannot be read)."""
    if not (folder / DESCRIPTION).is_file():
        return None
    try:
        return load(folder)
    except Exception:  # damaged after it was written: train again
        discard_cached_copy(folder)
        return None


def store(folder: Path, tokenizer: Any, description: dict[str, Any]) -> None:
    """Save ``tokenizer`` to ``folder`` through a partial folder and one rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(folder)
    partial = folder.with_name(f"{folder.name}.partial-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer.save_pretrained(partial)
    # Written last: a folder with key.json is complete.
    (partial / DESCRIPTION).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    try:
        partial.rename(folder)
    except OSError:
        if (folder / DESCRIPTION).is_file():  # another process stored the same copy first
            shutil.rmtree(partial, ignore_errors=True)
            return
        discard_cached_copy(folder)  # a folder by that name that we did not write
        partial.rename(folder)
