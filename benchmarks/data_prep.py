"""Data preparation: tokenizing and packing a 50 MB text corpus for SFT, the first time, the
second time (a cache hit), and with two processes.

    python benchmarks/data_prep.py           # 50 MB: a few minutes on 2 CPU cores
    python benchmarks/data_prep.py --quick   # 1 MB, seconds: proves it runs

The corpus is built at run time in a temporary folder: ../shared/data/rij.txt repeated when it is
there, generated sentences otherwise. A byte-level BPE tokenizer (8,000 tokens) is trained on its
first megabyte by the launcher's tokenizer code. Each measurement calls
``launcher.ranks.data_cache.prepare`` the way a rank does, for the recipe defaults of an SFT run
(``max_length`` 512, bfd packing, shuffled), and times it whole: reading the text, the cache key,
tokenizing, packing, saving. A "first run" starts with an empty launcher cache and an empty
``datasets`` cache; the second run is the same call again. Runs are interleaved and repeated
(medians); CPU seconds include the worker processes, so CPU above wall time shows them running in
parallel. Ratios are against the one-process first run measured in the same invocation.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RIJ = Path(__file__).resolve().parents[2] / "shared" / "data" / "rij.txt"
FULL_BYTES = 50_000_000
QUICK_BYTES = 1_000_000


def build_corpus(path: Path, size: int) -> str:
    """``size`` bytes of text, one sample per line (the ``text`` format's unit)."""
    if RIJ.is_file():
        chunk = RIJ.read_bytes()
        source = f"{RIJ.name} repeated"
    else:
        rng = random.Random(0)
        words = [
            "".join(rng.choices("etaoinshrdlucmfwypvbgk", k=rng.randint(1, 9))) for _ in range(3000)
        ]
        lines = [" ".join(rng.choices(words, k=rng.randint(3, 40))) for _ in range(20000)]
        chunk = ("\n".join(lines) + "\n").encode()
        source = "generated sentences"
    with open(path, "wb") as out:
        written = 0
        while written < size:
            piece = chunk[: size - written]
            out.write(piece)
            written += len(piece)
    return source


def train_tokenizer(corpus: Path, folder: Path, vocab_size: int) -> Any:
    from launcher.ranks.tokenizer import prepare_tokenizer
    from launcher.ranks.tokenizer_stage import load_saved_tokenizer, save_tokenizer
    from launcher.recipe.schema import TokenizerSection, TrainedTokenizerSection

    with open(corpus, encoding="utf-8", errors="ignore") as handle:
        sample = handle.read(1_000_000).splitlines()
    section = TokenizerSection(
        pad_token="eos",
        train=TrainedTokenizerSection(
            algorithm="byte_level_bpe",
            vocab_size=vocab_size,
            special_tokens=["<unk>", "<s>", "</s>"],
        ),
    )
    tokenizer = prepare_tokenizer(
        section, model_pretrained=None, texts=lambda: sample, model_max_length=512
    )
    save_tokenizer(tokenizer, folder)
    return load_saved_tokenizer(folder)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the ``num_proc`` workers)."""
    import resource

    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_prepare(recipe: Any, tokenizer_dir: Path, root: Path, hf_cache: Path) -> dict[str, Any]:
    """One preparation as a rank does it; ``hf_cache`` empty makes it a cold first run."""
    import datasets

    from launcher.ranks.data_cache import prepare
    from launcher.ranks.tokenizer_stage import load_saved_tokenizer

    datasets.config.HF_DATASETS_CACHE = hf_cache
    tokenizer = load_saved_tokenizer(tokenizer_dir)
    started, cpu = time.perf_counter(), cpu_seconds()
    prepared = prepare(recipe, tokenizer, tokenizer_dir, log=lambda m: None, root=root)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu": cpu_seconds() - cpu, "prepared": prepared}


FIRST = "first run, 1 process (data.num_proc=1)"
HIT = "second run, same recipe (cache hit)"
TWO = "first run, 2 processes (data.num_proc=2)"


def measure(work: Path, size: int, repeats: int) -> tuple[str, list[dict[str, Any]]]:
    from launcher.recipe.schema import Recipe

    corpus = work / "corpus.txt"
    source = build_corpus(corpus, size)
    tokenizer_dir = work / "tokenizer"
    train_tokenizer(corpus, tokenizer_dir, vocab_size=8000 if size >= FULL_BYTES else 1000)

    def recipe(num_proc: int | None, path: Path = corpus) -> Recipe:
        data = {"files": {"train": str(path)}, "num_proc": num_proc}
        return Recipe.model_validate({"name": "data-prep", "task": "sft", "data": data})

    # Warm-up on a few lines, so that no measurement pays for first imports.
    few = work / "few.txt"
    few.write_text("".join(corpus.open().readlines()[:50]))
    for num_proc in (1, 2):
        timed_prepare(recipe(num_proc, few), tokenizer_dir, work / "warm", work / "hf-warm")

    runs: dict[str, list[dict[str, Any]]] = {FIRST: [], HIT: [], TWO: []}
    for attempt in range(repeats):  # interleaved, each first run with empty caches
        cache, hf = work / f"cache-{attempt}", work / f"hf-{attempt}"
        runs[FIRST].append(timed_prepare(recipe(1), tokenizer_dir, cache / "one", hf / "one"))
        runs[HIT].append(timed_prepare(recipe(1), tokenizer_dir, cache / "one", hf / "one"))
        runs[TWO].append(timed_prepare(recipe(2), tokenizer_dir, cache / "two", hf / "two"))
    assert not any(run["prepared"].hit for run in runs[FIRST] + runs[TWO])
    assert all(run["prepared"].hit for run in runs[HIT])
    keys = {run["prepared"].key for measured in runs.values() for run in measured}
    assert len(keys) == 1, "the process count changes no row, so not the key either"

    first = statistics.median(run["seconds"] for run in runs[FIRST])
    results = []
    for name, measured in runs.items():
        seconds = statistics.median(run["seconds"] for run in measured)
        summary = measured[0]["prepared"].summary["train"]
        results.append(
            {
                "name": name,
                "seconds": seconds,
                "cpu": statistics.median(run["cpu"] for run in measured),
                "ratio": seconds / first,
                "rows": summary["rows"],
                "tokens": summary["tokens"],
            }
        )
    return f"{size / 1e6:.0f} MB of text ({source}), median of {repeats}", results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| run | seconds | CPU seconds | vs first run | packed rows | tokens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['seconds']:.2f} | {r['cpu']:.2f} | {r['ratio']:.4f} | "
            f"{r['rows']:,} | {r['tokens']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 MB instead of 50 MB (seconds)")
    options = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local
    with tempfile.TemporaryDirectory(prefix="data-prep-") as folder:
        size, repeats = (QUICK_BYTES, 1) if options.quick else (FULL_BYTES, 3)
        corpus, results = measure(Path(folder), size, repeats)
    print(
        f"Data preparation: {corpus}, SFT defaults (max_length 512, bfd packing), {os.cpu_count()} CPU cores\n"
    )
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
