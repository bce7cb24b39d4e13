"""Entities in a sequence of word tags, and the entity-level scores of named-entity recognition.

The definition is seqeval's default mode (CoNLL's ``conlleval``): an entity is a maximal chunk of
words whose tags say "begin" then "inside" of one type; a prediction counts only when its type and
its exact word span match a gold entity. Precision, recall and F1 are micro averages over all
entities. Tags are IOB2 (``B-PER``, ``I-PER``, ``O``), also IOB1, IOE and IOBES (the prefixes
``E-``/``S-``), or plain (``PER``, ``O``: each run of one tag is one entity). Standard library
only: the metrics of training and of ``launcher predict`` share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

OUTSIDE = "O"
PREFIXES = ("B", "I", "E", "S")


class Entity(NamedTuple):
    """Words ``start`` to ``end`` (inclusive) form one entity of ``label``."""

    label: str
    start: int
    end: int


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``; a plain ``"PER"`` -> ``("I",
    "PER")`` (inside: a run of it is one entity)."""
    if tag == OUTSIDE or not tag:
        return OUTSIDE, ""
    prefix, dash, kind = tag.partition("-")
    if dash and prefix in PREFIXES and kind:
        return prefix, kind
    return "I", tag


def ends_chunk(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    (prev_prefix, prev_kind), (prefix, kind) = previous, current
    if prev_prefix == OUTSIDE:
        return False
    if prev_prefix in ("E", "S") or prefix in ("B", "S", OUTSIDE):
        return True
    return prev_kind != kind


def starts_chunk(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    (prev_prefix, prev_kind), (prefix, kind) = previous, current
    if prefix == OUTSIDE:
        return False
    if prefix in ("B", "S") or prev_prefix in (OUTSIDE, "E", "S"):
        return True
    return prev_kind != kind


def entities(tags: Sequence[str]) -> list[Entity]:
    """The entities of one sentence's tags, in order."""
    found: list[Entity] = []
    previous, start = (OUTSIDE, ""), 0
    for index, tag in enumerate([*tags, OUTSIDE]):
        current = split_tag(tag)
        if ends_chunk(previous, current):
            found.append(Entity(previous[1], start, index - 1))
        if starts_chunk(previous, current):
            start = index
        previous = current
    return found


def entity_scores(
    gold: Iterable[Sequence[str]], predicted: Iterable[Sequence[str]]
) -> dict[str, float]:
    """Micro precision, recall and F1 over the entities of paired sentences (0 where undefined,
    as seqeval reports it), and the share of words tagged right (``accuracy``)."""
    true_positives = said = there = right = words = 0
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        if len(gold_tags) != len(predicted_tags):
            raise ValueError(f"{len(gold_tags)} gold tags but {len(predicted_tags)} predicted")
        gold_set, predicted_set = set(entities(gold_tags)), set(entities(predicted_tags))
        true_positives += len(gold_set & predicted_set)
        said += len(predicted_set)
        there += len(gold_set)
        right += sum(g == p for g, p in zip(gold_tags, predicted_tags, strict=True))
        words += len(gold_tags)
    precision = true_positives / said if said else 0.0
    recall = true_positives / there if there else 0.0
    total = precision + recall
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / total if total else 0.0,
        "accuracy": right / words if words else 0.0,
    }
