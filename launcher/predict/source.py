"""Where ``launcher predict`` gets its model: a run directory (its final model, or one of its
checkpoints) or any Hugging Face model folder (``launcher export``'s output, a ``model/`` folder).

The task comes from the run's recipe, or from the folder's ``config.json`` (the model class its
``architectures`` name), so the right head and the right kind of prediction are used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.contract import RunLayout
from launcher.errors import LauncherError
from launcher.ranks.adapters import PEFT_TASK_TYPES

# The model class suffix each task's head has (``BertForTokenClassification``, ...).
TASK_OF_CLASS = {
    "ForCausalLM": "sft",
    "ForMaskedLM": "mlm",
    "ForSequenceClassification": "classification",
    "ForTokenClassification": "token_classification",
}


@dataclass
class Source:
    """The model to predict with: its folder (or checkpoint), task and tokenizer folder."""

    folder: Path
    task: str
    tokenizer_folder: Path
    run: RunLayout | None = None
    checkpoint: Path | None = None
    trust_remote_code: bool = False

    def describe(self) -> str:
        if self.checkpoint is not None:
            return f"{self.checkpoint} ({self.task})"
        return f"{self.folder} ({self.task})"


def find_source(path: Path, checkpoint: int | None) -> Source:
    """A run directory, a run's checkpoint, or a model folder; errors say what was expected."""
    if not path.exists():
        raise LauncherError(f"{path} does not exist: pass a run directory or a model folder")
    if not path.is_dir():
        raise LauncherError(
            f"{path} is a file: pass a run directory (runs/NAME) or a model folder "
            "(`launcher export` output), and the text with --input FILE or --text"
        )
    layout = RunLayout(path.absolute())
    if layout.recipe_file.is_file():
        return run_source(layout, checkpoint)
    if checkpoint is not None:
        raise LauncherError(f"--checkpoint: {path} is a model folder, not a run directory")
    return Source(folder=path, task=task_of_folder(path), tokenizer_folder=path)


def run_source(layout: RunLayout, step: int | None) -> Source:
    from launcher.export import choose_checkpoint, read_recipe

    facts = read_recipe(layout)
    if step is None:
        saved = ("config.json", "adapter_config.json")
        if not any((layout.model_dir / name).is_file() for name in saved):
            raise LauncherError(
                f"{layout.root} has no final model yet ({layout.model_dir}): the run has not "
                "finished. Predict with one of its checkpoints: --checkpoint STEP."
            )
        return Source(
            folder=layout.model_dir,
            task=facts.task,
            tokenizer_folder=layout.model_dir,
            run=layout,
            trust_remote_code=facts.trust_remote_code,
        )
    chosen = choose_checkpoint(layout, step)
    tokenizer = chosen if (chosen / "tokenizer_config.json").is_file() else layout.tokenizer_dir
    return Source(
        folder=chosen,
        task=facts.task,
        tokenizer_folder=tokenizer,
        run=layout,
        checkpoint=chosen,
        trust_remote_code=facts.trust_remote_code,
    )


def task_of_folder(folder: Path) -> str:
    config_file = folder / "config.json"
    adapter = folder / "adapter_config.json"
    if adapter.is_file():  # an exported LoRA adapter: peft records the task type
        task_type = json.loads(adapter.read_text()).get("task_type")
        tasks = {kind: task for task, kind in PEFT_TASK_TYPES.items() if kind}
        if task_type in tasks:
            return tasks[task_type]
    if not config_file.is_file():
        raise LauncherError(
            f"{folder} is neither a run directory (no recipe.yaml) nor a model folder (no "
            "config.json)"
        )
    classes = json.loads(config_file.read_text()).get("architectures") or []
    for name in classes:
        for suffix, task in TASK_OF_CLASS.items():
            if name.endswith(suffix):
                return task
    raise LauncherError(
        f"{config_file}: its model class {classes or '(none named)'} is not one launcher predicts "
        f"with (a class ending in {', '.join(TASK_OF_CLASS)})"
    )


def load_model(source: Source) -> Any:
    """The model in evaluation mode: from a model folder, or rebuilt from a checkpoint (DeepSpeed
    shards included) exactly as ``launcher export`` reads it."""
    import transformers.utils.logging

    from launcher.ranks.quiet import quiet_library_noise

    quiet_library_noise()
    transformers.utils.logging.disable_progress_bar()  # a bar for reading one file is noise
    from launcher.export_adapter import is_adapter_checkpoint

    if is_adapter_checkpoint(source.folder):
        model = load_with_adapter(source)
    elif source.checkpoint is not None and source.run is not None:
        from launcher.export import load_checkpoint, read_recipe

        model = load_checkpoint(source.checkpoint, read_recipe(source.run)).model
    else:
        from launcher.ranks.model import auto_class

        try:
            model = auto_class(source.task).from_pretrained(
                source.folder, trust_remote_code=source.trust_remote_code
            )
        except (OSError, ValueError) as error:
            raise LauncherError(f"cannot load the model in {source.folder}: {error}") from error
    return model.eval()


def load_with_adapter(source: Source) -> Any:
    """A LoRA run's model: the base its adapter names, with the adapter on top (unmerged)."""
    from peft import PeftModel

    from launcher.export_adapter import base_model_path
    from launcher.ranks.model import auto_class

    base = base_model_path(source.folder)
    try:
        model = auto_class(source.task).from_pretrained(
            base, trust_remote_code=source.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise LauncherError(
            f"cannot load {base!r}, the base model of the adapter in {source.folder}: {error}"
        ) from error
    return PeftModel.from_pretrained(model, str(source.folder))


def load_tokenizer(source: Source) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            source.tokenizer_folder, trust_remote_code=source.trust_remote_code
        )
    except (OSError, ValueError) as error:
        raise LauncherError(
            f"cannot load the tokenizer in {source.tokenizer_folder}: {error}"
        ) from error
