"""A pretrained model's ``config.json``, read for the plan without transformers or the network:
from the local folder ``model.pretrained`` names, or from the Hugging Face hub cache where
``from_pretrained`` would find it.

Standard library only (``launcher plan`` runs on login nodes). The cache is found as
``huggingface_hub`` finds it: ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE``, else
``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub`` (``~/.cache/huggingface/hub``); a
model ``org/name`` lies in ``models--org--name``, whose ``refs/main`` names the snapshot folder of
the main revision (tests/plan/test_architectures.py checks this against ``huggingface_hub``'s own
``try_to_load_from_cache``). Every file is looked up through ``exists``, the plan's view of
the file system, so that a plan can be built as if nothing were there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from launcher.paths import is_local_path


class ModelConfig(NamedTuple):
    """The config read (None when none could be), and where from, or why not."""

    config: dict[str, Any] | None
    source: str


def hub_cache() -> Path:
    """The hub cache folder, by huggingface_hub's own precedence of variables."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        home = Path(os.environ["HF_HOME"]).expanduser()
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return home / "hub"


def cached_config_file(repo_id: str, exists: Callable[[Path], bool] = Path.exists) -> Path | None:
    """The cached ``config.json`` of hub model ``repo_id`` at its main revision, or None."""
    folder = hub_cache() / f"models--{repo_id.replace('/', '--')}"
    ref = folder / "refs" / "main"
    if not exists(ref):
        return None
    snapshot = folder / "snapshots" / ref.read_text().strip() / "config.json"
    return snapshot if exists(snapshot) else None


def read_model_config(pretrained: str, exists: Callable[[Path], bool] = Path.exists) -> ModelConfig:
    """``pretrained``'s config.json (a local folder's, or the hub cache's), or why it is unknown."""
    local = Path(pretrained).expanduser() / "config.json"
    if exists(local):
        return _read(local)
    if is_local_path(pretrained) or exists(Path(pretrained).expanduser()):
        return ModelConfig(None, f"no config.json in the folder {pretrained}")
    cached = cached_config_file(pretrained, exists)
    if cached is None:
        return ModelConfig(
            None,
            f"no config.json for {pretrained} in the hub cache ({hub_cache()}); "
            f"`hf download {pretrained} config.json` puts it there",
        )
    return _read(cached)


def _read(path: Path) -> ModelConfig:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return ModelConfig(None, f"cannot read {path}: {error}")
    if not isinstance(config, dict):
        return ModelConfig(None, f"{path} is not a JSON object")
    return ModelConfig(config, str(path))
