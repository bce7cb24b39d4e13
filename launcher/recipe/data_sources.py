"""A mixture of data sources (``data.sources``): what each source is, the share of the training
rows it is expected to give, and the plan-time checks of the mixture.

Standard library and the schema only: the plan (which imports no ``datasets``), ``--smoke`` and
the ranks (``launcher.ranks.data_mixture``, which does the mixing) share these rules.

Shares: ``interleave`` draws each row from source i with probability ``w_i / sum(w)``
(``datasets.interleave_datasets``), so that is the share of the rows it gives, until the mixture
stops; without weights it takes one row of each in turn (equal shares). ``concatenate`` keeps
every row, so the shares follow the sources' sizes, known at plan time only when every source
names its row count (``samples``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from launcher.recipe.data_checks import template_problems_at
from launcher.recipe.schema import DataSection, DataSource, Recipe, split_name

Problem = tuple[str, str]
# How `mix_stopping` reads in the plan.
STOPPING = {
    "first_exhausted": "stops when the first source runs out",
    "all_exhausted": "stops when every source has run out; the others repeat meanwhile",
}


def source_key(index: int) -> str:
    return f"data.sources.{index}"


def source_paths(source: DataSource) -> list[str]:
    """The source's local files (none for a hub dataset)."""
    if source.files is None:
        return []
    return [source.files] if isinstance(source.files, str) else list(source.files)


def source_files(data: DataSection) -> list[tuple[str, str]]:
    """(key path, path) of every local file of ``data.sources``."""
    found = []
    for index, source in enumerate(data.sources or []):
        key = f"{source_key(index)}.files"
        paths = source_paths(source)
        if isinstance(source.files, str):
            found.append((key, paths[0]))
        else:
            found += [(f"{key}.{i}", path) for i, path in enumerate(paths)]
    return found


def source_section(data: DataSection, source: DataSource) -> DataSection:
    """``data`` as it reads one source alone: the source's dataset or files, split, format and
    columns, the section's own ``columns`` / ``template`` / ``text_column`` where the source sets
    none. No evaluation split, hold-out or sample: those apply to the mixture."""
    files = {split_name(source.split): source_paths(source)} if source.files else None
    return data.model_copy(
        update={
            "sources": None,
            "dataset": source.dataset,
            "dataset_config": source.dataset_config,
            "files": files,
            "format": source.format,
            "delimiter": source.delimiter,
            "column_names": None,
            "train_split": source.split,
            "eval_split": None,
            "eval_fraction": 0.0,
            "train_samples": None,
            "eval_samples": None,
            "text_column": source.text_column or data.text_column,
            "columns": source.columns if source.columns is not None else data.columns,
            "template": source.template if source.template is not None else data.template,
        }
    )


def source_label(source: DataSource) -> str:
    """``org/name:config [train[:1000]]`` or ``a.jsonl, b.jsonl [train]``: a source in a line."""
    if source.dataset:
        name = source.dataset + (f":{source.dataset_config}" if source.dataset_config else "")
    else:
        names = [Path(path).name for path in source_paths(source)]
        name = ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")
    return f"{name} [{source.split}]"


def mix_mode(data: DataSection) -> str:
    """``interleave`` or ``concatenate`` (``auto``: interleave when the sources have weights)."""
    if data.mix != "auto":
        return data.mix
    weighted = any(source.weight is not None for source in data.sources or [])
    return "interleave" if weighted else "concatenate"


def probabilities(data: DataSection) -> list[float] | None:
    """Interleave: each source's probability, its weight over the sum of the weights; None when
    no source has a weight (one row of each in turn)."""
    weights = [source.weight for source in data.sources or []]
    if not any(weight is not None for weight in weights):
        return None
    known = [weight or 0.0 for weight in weights]  # an unweighted source is refused at plan time
    total = sum(known)
    return [weight / total for weight in known]


def expected_shares(data: DataSection) -> list[float | None]:
    """The share of the mixture's rows each source is expected to give (None: its size decides,
    unknown before the data is read)."""
    sources = data.sources or []
    if mix_mode(data) == "interleave":
        return list(probabilities(data) or [1 / len(sources)] * len(sources))
    counts = [source.samples for source in sources]
    if all(count is not None for count in counts):
        total = sum(count for count in counts if count is not None)
        return [(count or 0) / total for count in counts]
    return [None] * len(sources)


# --- plan-time checks -------------------------------------------------------------------------


def mixture_problems(data: DataSection) -> Iterator[Problem]:
    """The mixture's shape, whatever the task: one origin per source, the keys a mixture replaces,
    weights that make shares."""
    if not data.sources:
        return
    for key, value in (("data.dataset", data.dataset), ("data.files", data.files)):
        if value:
            yield "data.sources", f"set together with `{key}`; use one of the two"
    replaced = {
        "dataset_config": (data.dataset_config, None),
        "format": (data.format, "auto"),
        "delimiter": (data.delimiter, None),
        "train_split": (data.train_split, "train"),
    }
    for name, (value, default) in replaced.items():
        if value != default:
            each = "split" if name == "train_split" else name
            yield (
                f"data.{name}",
                f"with data.sources each source sets its own: {source_key(0)}.{each}",
            )
    if data.eval_split:
        yield (
            "data.eval_split",
            "with data.sources the evaluation rows are held out of the mixture: set "
            "data.eval_fraction instead",
        )
    for index, source in enumerate(data.sources):
        yield from one_source_problems(source, source_key(index))
    yield from weight_problems(data)


def one_source_problems(source: DataSource, key: str) -> Iterator[Problem]:
    if not source.dataset and not source.files:
        yield key, "set `dataset` (hub id) or `files` (local files)"
    if source.dataset and source.files:
        yield f"{key}.files", "set together with `dataset`; use one of the two"
    if source.files is not None and not source_paths(source):
        yield f"{key}.files", "an empty list: name at least one file"
    if source.dataset_config and not source.dataset:
        yield f"{key}.dataset_config", "a configuration of a hub dataset: set `dataset` too"
    for name, value in (("format", source.format != "auto"), ("delimiter", source.delimiter)):
        if source.dataset and value:
            yield f"{key}.{name}", "describes local `files`; a hub dataset has its own"


def weight_problems(data: DataSection) -> Iterator[Problem]:
    sources = data.sources or []
    weighted = [i for i, source in enumerate(sources) if source.weight is not None]
    if mix_mode(data) == "concatenate":
        for index in weighted:
            yield (
                f"{source_key(index)}.weight",
                "weights share out an interleaved mixture; `data.mix: concatenate` keeps every "
                "row of each source (set `samples` to choose its rows, or `mix: interleave`)",
            )
        return
    for index in range(len(sources) if weighted else 0):
        if index not in weighted:
            yield (
                f"{source_key(index)}.weight",
                "required: other sources have weights, which share out the mixture; set one "
                "for every source (or none: one row of each in turn)",
            )


def source_option_problems(recipe: Recipe) -> Iterator[Problem]:
    """What the task reads from each source: a template that parses (never for tagged words),
    SFT's column names, tag names for a mixture of tagged words."""
    data = recipe.data
    for index, source in enumerate(data.sources or []):
        key = source_key(index)
        if source.template is not None:
            yield from template_problems_at(f"{key}.template", source.template, recipe.task)
        if source.columns is not None and recipe.task != "sft":
            yield f"{key}.columns", f"names the columns SFT reads; task {recipe.task!r} reads text"
    if data.sources and recipe.task == "token_classification" and not data.labels:
        yield (
            "data.labels",
            "token classification of a mixture needs the tag names in id order (the sources "
            "must share them)",
        )
