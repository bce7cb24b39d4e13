"""``launcher predict``: the trained model on new text, batched, on a GPU when there is one.

    launcher predict runs/ner-smoke --text "Alice flew to Paris on Tuesday."
    launcher predict runs/classification-imdb --input reviews.csv -o predictions.jsonl
    launcher predict exported/sft-mistral --input prompts.txt --max-new-tokens 100

One JSON object per input goes to ``-o`` (written whole, then renamed) or to stdout. When the input
carries gold labels (classification) or gold tags (token classification), the task's metrics are
printed too, computed as the run's evaluation computes them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from launcher.errors import LauncherError
from launcher.files import write_text_atomic
from launcher.predict.inputs import Example, columns_of, read_examples
from launcher.predict.source import Source, find_source, load_model, load_tokenizer
from launcher.predict.tasks import BatchResult, Settings, predict_batch

DEFAULT_MAX_LENGTH = 512  # when neither the run nor the tokenizer says


def predict(
    source_path: Path,
    *,
    input_file: Path | None,
    texts: list[str],
    output: Path | None,
    checkpoint: int | None,
    batch_size: int,
    settings: Settings,
) -> dict[str, float]:
    """Predict every input; return the metrics (empty without gold labels)."""
    source = find_source(source_path, checkpoint)
    recipe = read_run_recipe(source)
    if output is not None:
        check_output(output, input_file)
    examples = read_examples(input_file, texts, columns_of(recipe))
    model, tokenizer = load_model(source), load_tokenizer(source)
    settings.max_length = max_length(recipe, tokenizer, model)
    model.to(device())
    results = [
        predict_batch(source.task, model, tokenizer, batch, settings)
        for batch in batches(examples, batch_size, source)
    ]
    rows = [row for result in results for row in result.rows]
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    # With the rows on stdout, what is said about them goes to stderr (a pipe gets pure JSON).
    report = sys.stdout if output is not None else sys.stderr
    if output is None:
        sys.stdout.write(lines)
    else:
        write_text_atomic(output, lines)
        print(f"{len(rows)} predictions -> {output}", file=report)
    metrics = gold_metrics(source.task, model, examples, results)
    if metrics:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in metrics.items())
        print(f"metrics on {count_gold(examples)} labelled inputs: {shown}", file=report)
    return metrics


def read_run_recipe(source: Source) -> dict[str, Any] | None:
    if source.run is None:
        return None
    import yaml

    return yaml.safe_load(source.run.recipe_file.read_text()) or {}


def check_output(output: Path, input_file: Path | None) -> None:
    if output.is_dir():
        raise LauncherError(f"-o: {output} is a folder; give a file name such as out.jsonl")
    if input_file is not None and output.resolve() == input_file.resolve():
        raise LauncherError(f"-o: {output} is the input file; write the predictions elsewhere")
    if not output.parent.is_dir():
        raise LauncherError(f"-o: {output.parent} does not exist")


def max_length(recipe: dict[str, Any] | None, tokenizer: Any, model: Any) -> int:
    """The run's ``data.max_length`` (what training and evaluation truncated to), else the
    tokenizer's and the model's limits."""
    data = (recipe or {}).get("data") or {}
    if data.get("max_length"):
        return int(data["max_length"])
    limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
    usable = [int(limit) for limit in limits if isinstance(limit, int) and 0 < limit < 1_000_000]
    return min(usable) if usable else DEFAULT_MAX_LENGTH


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def batches(examples: list[Example], size: int, source: Source):
    """The examples in batches, with a progress bar on a terminal."""
    chunks = [examples[start : start + size] for start in range(0, len(examples), size)]
    if not sys.stderr.isatty() or len(chunks) < 2:
        yield from chunks
        return
    from tqdm import tqdm

    yield from tqdm(chunks, desc=f"predicting with {source.describe()}", unit="batch")


def count_gold(examples: list[Example]) -> int:
    return sum(example.gold is not None for example in examples)


def gold_metrics(
    task: str, model: Any, examples: list[Example], results: list[BatchResult]
) -> dict[str, float]:
    """The task's metrics over the inputs that carry gold labels (all of them, or none)."""
    labelled = count_gold(examples)
    if not labelled:
        return {}
    if labelled != len(examples):
        raise LauncherError(
            f"--input: {labelled} of {len(examples)} rows have gold labels; give all or none"
        )
    if task == "classification":
        return classification_metrics(model, examples, results)
    if task == "token_classification":
        return tagging_metrics(model, examples, results)
    return {}


def classification_metrics(
    model: Any, examples: list[Example], results: list[BatchResult]
) -> dict[str, float]:
    from types import SimpleNamespace

    import numpy as np

    from launcher.ranks.trainers import accuracy

    logits = np.concatenate([result.logits for result in results])
    gold = [label_id(example.gold, model.config.label2id) for example in examples]
    return accuracy(SimpleNamespace(predictions=logits, label_ids=np.array(gold)))


def tagging_metrics(
    model: Any, examples: list[Example], results: list[BatchResult]
) -> dict[str, float]:
    from launcher.ranks.entities import entity_scores

    names = model.config.id2label
    gold = []
    for example in examples:
        if not isinstance(example.gold, list) or example.words is None:
            raise LauncherError("--input: gold tags need a list of words and a list of tags")
        gold.append([tag_name(tag, names) for tag in example.gold])
    predicted = [tags for result in results for tags in result.tags]
    return entity_scores(gold, predicted)


def label_id(gold: Any, label2id: dict[str, int]) -> int:
    if isinstance(gold, int) or (isinstance(gold, str) and gold.isdigit()):
        return int(gold)
    lowered = {name.lower(): index for name, index in label2id.items()}
    if str(gold).lower() not in lowered:
        raise LauncherError(f"--input: gold label {gold!r} is not one of {list(label2id)}")
    return lowered[str(gold).lower()]


def tag_name(tag: Any, names: dict[int, str]) -> str:
    if isinstance(tag, int):
        if tag not in names:
            raise LauncherError(f"--input: gold tag id {tag} is not one of {sorted(names)}")
        return names[tag]
    return str(tag)
