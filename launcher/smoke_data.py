"""Small generated datasets for ``--smoke`` runs, with the recipe's own columns.

Standard library only (it runs in the launcher process). The text is deterministic and has some
structure to learn: SFT documents have a skewed length distribution like real corpora (many short,
a few long), and classification texts carry words that depend on their label, so a smoke run's loss
and accuracy move.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from launcher.files import write_text_atomic
from launcher.recipe.data_sources import source_section
from launcher.recipe.data_template import template_fields
from launcher.recipe.sample_formats import planned_format
from launcher.recipe.schema import DataSection, Recipe

WORDS = (
    "the a of to and in is it that for on with as was at by this be from or an are his her they "
    "which one you had not but what all were when we there can more if out so said up its about "
    "into than them only other new some could time these two may then do first any my now such "
    "like our over man me even most made after also did many before must through back years where "
    "much your way well down should because each just those people how too little state good very "
    "make world still own see men work long get here between both life being under never day same "
    "another know while last might us great old year off come since against go came right used take"
).split()
# Label i of `data.labels` gets the words of LABEL_WORDS[i]; IMDB-style recipes list NEGATIVE first.
LABEL_WORDS = (
    "dreadful boring clumsy tedious awful dull painful forgettable".split(),
    "wonderful brilliant moving delightful superb charming gripping beautiful".split(),
    "strange curious odd surprising unusual quirky".split(),
)
SMOKE_EVAL_FRACTION = 4
# Token classification: the entity type i of the recipe's tags gets the names of ENTITY_NAMES[i],
# one or two words long, so a smoke run can learn where entities start and what they are.
ENTITY_NAMES = (
    "Alice Bob Carol Dmitri Emma Farid Grace Hiro".split(),
    "Paris Lagos Lima Oslo Kyoto Quebec Delhi Perth".split(),
    "Acme Globex Initech Umbrella Hooli Vandelay Soylent Cyberdyne".split(),
    "Tuesday Easter Olympics Ramadan Diwali Christmas Hanukkah Carnival".split(),
)


def write_smoke_data(recipe: Recipe, folder: Path) -> None:
    """Write the generated split files the smoke plan points at (files elsewhere are the user's)."""
    files = recipe.data.files or {}
    for split, path in files.items():
        if not isinstance(path, str) or Path(path).parent != folder or Path(path).exists():
            continue
        count = (
            recipe.smoke.num_samples
            if split == "train"
            else max(recipe.smoke.num_samples // SMOKE_EVAL_FRACTION, 2)
        )
        rng = random.Random(f"{recipe.training.seed}-{split}")
        rows = [make_row(recipe, rng) for _ in range(count)]
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(path), "".join(json.dumps(row) + "\n" for row in rows))
    write_source_files(recipe, folder)


def write_source_files(recipe: Recipe, folder: Path) -> None:
    """The generated file of each source of a mixture that the smoke plan generates, with that
    source's own columns (its template's fields, its text column, its SFT columns)."""
    for index, source in enumerate(recipe.data.sources or []):
        path = Path(source.files) if isinstance(source.files, str) else None
        if path is None or path.parent != folder or path.exists():
            continue
        alone = recipe.model_copy(update={"data": source_section(recipe.data, source)})
        rng = random.Random(f"{recipe.training.seed}-source-{index}")
        rows = [make_row(alone, rng) for _ in range(recipe.smoke.num_samples)]
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in rows))


def make_row(recipe: Recipe, rng: random.Random) -> dict[str, Any]:
    data = recipe.data
    if recipe.task == "token_classification":
        words, tags = tagged_sentence(rng, data.labels or [])
        return {data.tokens_column: words, data.tags_column: tags}
    if recipe.task == "sft" and smoke_format(data) != "text":
        return sft_sample(data, rng)
    # With data.template the text is made from the columns it names: generate those instead.
    columns = (
        template_fields(data.template) if isinstance(data.template, str) else [data.text_column]
    )
    if recipe.task == "classification":
        labels = data.labels or ["0", "1"]
        index = rng.randrange(len(labels))
        flavour = LABEL_WORDS[index % len(LABEL_WORDS)]
        row: dict[str, Any] = {
            column: " ".join(sentence(rng, flavour) for _ in range(rng.randint(1, 3)))
            for column in columns
        }
        return {**row, data.label_column: labels[index]}
    if recipe.task == "sft":
        # Skewed lengths: most documents are a sentence or two, one in eight is long.
        count = rng.randint(8, 20) if rng.random() < 0.125 else rng.randint(1, 2)
        return {column: " ".join(sentence(rng) for _ in range(count)) for column in columns}
    if data.group_texts:  # MLM blocks of max_length: even a small eval hold-out fills a few
        count = rng.randint(3, 6)
        return {column: " ".join(sentence(rng) for _ in range(count)) for column in columns}
    return {column: sentence(rng) for column in columns}


def smoke_format(data: DataSection) -> str:
    """The SFT format of the generated rows: the recipe's, else conversations when the loss is on
    assistant turns, else prompt-completion pairs when columns are mapped, else plain text."""
    fmt = planned_format(data)
    if fmt != "auto":
        return fmt
    if data.loss_on == "assistant":
        return "messages"
    return "prompt_completion" if data.columns else "text"


def sft_sample(data: DataSection, rng: random.Random) -> dict[str, Any]:
    """A conversation or a prompt and its answer, under the data's own column names
    (``data.columns``), or the columns a prompt/completion template names."""
    own = dict(data.columns or {})
    if isinstance(data.template, dict):  # instruction data: the columns the templates read
        fields = [f for text in data.template.values() for f in template_fields(text)]
        return {
            field: " ".join(sentence(rng) for _ in range(rng.randint(1, 2))) for field in fields
        }
    if smoke_format(data) == "messages":
        turns = [{"role": "system", "content": sentence(rng)}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 2)):
            turns.append({"role": "user", "content": sentence(rng)})
            turns.append({"role": "assistant", "content": sentence(rng)})
        return {own.get("messages", "messages"): turns}
    return {
        own.get("prompt", "prompt"): sentence(rng),
        own.get("completion", "completion"): " " + sentence(rng),
    }


def sentence(rng: random.Random, flavour: list[str] | None = None) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(5, 14))]
    if flavour:
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), rng.choice(flavour))
    return " ".join(words).capitalize() + "."


def tagged_sentence(rng: random.Random, labels: list[str]) -> tuple[list[str], list[str]]:
    """Words with one or two entities among them, tagged with the recipe's tag names (IOB2
    ``B-X``/``I-X`` when the names have that form, else the plain name on every word)."""
    kinds = [label[2:] for label in labels if label.startswith("B-")]
    iob = bool(kinds)
    kinds = kinds or [label for label in labels if label != "O"]
    words = [rng.choice(WORDS) for _ in range(rng.randint(4, 10))]
    tags = ["O"] * len(words)
    for _ in range(rng.randint(1, 2)):
        kind = rng.randrange(len(kinds))
        name, names = kinds[kind], ENTITY_NAMES[kind % len(ENTITY_NAMES)]
        longest = 2 if not iob or f"I-{name}" in labels else 1
        entity = [rng.choice(names) for _ in range(rng.randint(1, longest))]
        # Never inside another entity: before an outside word or an entity's first word.
        starts = [i for i, tag in enumerate([*tags, "O"]) if tag == "O" or tag.startswith("B-")]
        at = rng.choice(starts)
        words[at:at] = entity
        tags[at:at] = (
            [f"B-{name}"] + [f"I-{name}"] * (len(entity) - 1) if iob else [name] * len(entity)
        )
    return words, tags
