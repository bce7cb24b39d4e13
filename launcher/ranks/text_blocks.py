"""MLM ``data.group_texts``: tokenized texts concatenated and cut into full blocks of
``max_length``, the ``group_texts`` of the Hugging Face ``run_mlm.py`` example.

On a corpus of short lines (a play, a chat log), one padded line per sample spends most of each
batch on padding; blocks carry none. As in ``run_mlm.py`` each text is tokenized on its own with
its special tokens (``[CLS] ... [SEP]``), untruncated, and every column the tokenizer returned
(``input_ids``, ``attention_mask``, ``special_tokens_mask``, ``token_type_ids``) is concatenated
and cut at the same places, so the MLM collator still never masks a special token.

One difference, on purpose: ``run_mlm.py`` groups each map batch of 1,000 texts on its own and
drops each batch's remainder; here the whole split is one stream, cut once, so at most one
partial block (fewer than ``max_length`` tokens) is dropped, and the blocks do not depend on
how many processes tokenized the split (``data.num_proc`` is not part of the cache key). The
cutting runs on Arrow arrays, a block range at a time, without reading rows into Python.
"""

from __future__ import annotations

from typing import Any

from launcher.errors import LauncherError

# Blocks per Arrow chunk of the output: bounds the memory of one copy and keeps list offsets
# (32-bit in `datasets`' list type) far from overflowing on corpora of billions of tokens.
BLOCKS_PER_CHUNK = 1 << 14


class BlockError(LauncherError):
    exit_code = 2


def group_texts(tokenized: Any, block: int, name: str) -> Any:
    """``tokenized`` (one row per text) as rows of exactly ``block`` tokens each."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    table = tokenized.with_format("arrow")[:]  # honours an indices mapping (select, shuffle)
    streams = {column: pc.list_flatten(table.column(column)) for column in table.column_names}
    total = len(streams["input_ids"]) if "input_ids" in streams else 0
    blocks = total // block
    if blocks == 0:
        raise BlockError(
            f"data.group_texts: the {name} split has {total:,} tokens, fewer than one block of "
            f"data.max_length {block}; lower data.max_length or add text"
        )
    chunks: dict[str, list[Any]] = {column: [] for column in streams}
    for first in range(0, blocks, BLOCKS_PER_CHUNK):
        count = min(BLOCKS_PER_CHUNK, blocks - first)
        offsets = pa.array(range(0, (count + 1) * block, block), type=pa.int32())
        for column, values in streams.items():
            part = values.slice(first * block, count * block).combine_chunks()
            chunks[column].append(pa.ListArray.from_arrays(offsets, part))
    grouped = pa.table({column: pa.chunked_array(parts) for column, parts in chunks.items()})
    return datasets.Dataset(grouped, info=datasets.DatasetInfo(features=tokenized.features))
