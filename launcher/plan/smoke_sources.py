"""``--smoke`` of a mixture (``data.sources``): it stays a mixture of as many sources, with their
weights, columns and templates, so a smoke run goes through the mixing code of the real run.

A source of local files that exist keeps its first ``smoke.num_samples`` rows (or a smaller random
``samples``); any other source (a hub dataset, files not here) becomes a generated JSON lines file
in the run directory with that source's columns (``launcher.smoke_data.write_source_files``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from launcher.contract import RunLayout
from launcher.recipe.data_sources import mix_mode, source_paths
from launcher.recipe.schema import DataSource, Recipe, split_name


def swap_sources(recipe: Recipe, layout: RunLayout, exists: Callable[[Path], bool]) -> str:
    """Shrink or replace each source of ``recipe.data.sources``; the plan's note."""
    from launcher.plan.smoke import SMOKE_EVAL_FRACTION, shrink_samples

    data = recipe.data
    count = recipe.smoke.num_samples
    sources, kept, generated = [], [], []
    for index, source in enumerate(data.sources or []):
        paths = source_paths(source)
        local = bool(paths) and all(exists(Path(path)) for path in paths)
        smoke = (
            local_source(source, count) if local else generated_source(source, layout, index, count)
        )
        (kept if local else generated).append(str(index))
        sources.append(smoke)
    data.sources = sources
    shrink_samples(data, count, max(count // SMOKE_EVAL_FRACTION, 2))
    parts = []
    if generated:
        parts.append(
            f"{sources_named(generated)}: {count} generated samples each, with the source's own "
            f"columns, in {layout.smoke_data_dir}"
        )
    if kept:
        parts.append(f"{sources_named(kept)}: at most {count} rows of the local files")
    return (
        f"data: a mixture ({mix_mode(data)}) as the recipe's; {'; '.join(parts)}; max length "
        f"{data.max_length}"
    )


def sources_named(indices: list[str]) -> str:
    return f"source{'s' if len(indices) > 1 else ''} {', '.join(indices)}"


def local_source(source: DataSource, count: int) -> DataSource:
    """The source's first ``count`` rows; a random sample stays random, only smaller."""
    smoke = source.model_copy()
    if smoke.samples:
        smoke.samples = min(smoke.samples, count)
    else:
        smoke.split = f"{split_name(smoke.split)}[:{count}]"
    return smoke


def generated_source(source: DataSource, layout: RunLayout, index: int, count: int) -> DataSource:
    """The source as a generated JSON lines file (``smoke.num_samples`` rows) of its columns."""
    path = layout.smoke_data_dir / f"source-{index}.jsonl"
    return source.model_copy(
        update={
            "dataset": None,
            "dataset_config": None,
            "files": str(path),
            "format": "json",
            "delimiter": None,
            "split": "train",
            "samples": min(source.samples, count) if source.samples else None,
        }
    )
