"""Token classification (NER): entities and their scores, tags aligned to sub-tokens, CoNLL and
JSON-lines data, and the metrics the Trainer reports. In process, on real files and a real fast
tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tokenizers import BertWordPieceTokenizer
from transformers import PreTrainedTokenizerFast

from launcher.ranks.data import load_recipe_splits, tokenize_splits
from launcher.ranks.entities import Entity, entities, entity_scores
from launcher.ranks.token_tags import IGNORED, TagError, align, inside_ids, tag_names
from launcher.ranks.trainers import EntityMetrics
from launcher.recipe.schema import Recipe

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
CONLL = """-DOCSTART- -X- -X- O

Alice NNP B-NP B-PER
Smithson NNP I-NP I-PER
visited VBD B-VP O
Paris NNP B-NP B-LOC
. . O O

Bob NNP B-NP B-PER
stayed VBD B-VP O
"""


def test_entities_of_iob2_iob1_iobes_and_plain_tags() -> None:
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == [
        Entity("PER", 0, 1),
        Entity("LOC", 3, 3),
    ]
    # Two entities of one type side by side: the second B- starts a new one.
    assert entities(["B-PER", "B-PER", "I-PER"]) == [Entity("PER", 0, 0), Entity("PER", 1, 2)]
    # IOB1: an entity may open with I-; a type change closes one and opens another.
    assert entities(["I-LOC", "I-LOC", "I-PER", "O"]) == [Entity("LOC", 0, 1), Entity("PER", 2, 2)]
    # IOBES.
    assert entities(["S-LOC", "B-PER", "E-PER", "O"]) == [Entity("LOC", 0, 0), Entity("PER", 1, 2)]
    # Plain tags: each run of one tag is one entity.
    assert entities(["PER", "PER", "O", "LOC", "PER"]) == [
        Entity("PER", 0, 1),
        Entity("LOC", 3, 3),
        Entity("PER", 4, 4),
    ]


def test_entity_scores_by_hand() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-LOC", "B-PER"]]
    # Gold: PER(0-1), LOC(3), LOC(0); predicted: PER(0-1), LOC(0), PER(1): 2 right of 3 each way.
    scores = entity_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # A span cut short is wrong as a whole (exact match), though 3 of 4 words are right.
    cut = entity_scores([["B-PER", "I-PER", "O", "O"]], [["B-PER", "O", "O", "O"]])
    assert (cut["precision"], cut["recall"], cut["f1"], cut["accuracy"]) == (0.0, 0.0, 0.0, 0.75)
    assert entity_scores([["O"]], [["O"]])["f1"] == 0.0  # nothing to find: 0, as seqeval says
    with pytest.raises(ValueError, match="2 gold tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])


def test_alignment_labels_first_sub_token_or_all() -> None:
    # [CLS] Smith ##son visited [SEP]: words 0, 0, 1.
    word_ids = [None, 0, 0, 1, None]
    assert align(word_ids, [1, 0], None) == [IGNORED, 1, IGNORED, 0, IGNORED]
    assert inside_ids(TAGS) == [0, 2, 2, 4, 4]
    assert align(word_ids, [1, 0], inside_ids(TAGS)) == [IGNORED, 1, 2, 0, IGNORED]
    # A B- tag without its I- keeps itself on later sub-tokens.
    assert inside_ids(["O", "B-X"]) == [0, 1]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    words = "alice smithson visited paris bob stayed in lagos with carol".split()
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator([" ".join(words)] * 5, vocab_size=60, min_frequency=1)
    return PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip


def recipe(**data: object) -> Recipe:
    return Recipe.model_validate(
        {"name": "ner", "task": "token_classification", "model": {"architecture": "bert"},
         "tokenizer": {"pretrained": "x"}, "data": {"shuffle": False, **data}}
    )  # fmt: skip


def test_conll_file_with_four_columns_reads_words_and_last_column_tags(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    ner = recipe(files={"train": str(path)}, format="conll", labels=TAGS)
    split = load_recipe_splits(ner)["train"]
    assert split["tokens"] == [["Alice", "Smithson", "visited", "Paris", "."], ["Bob", "stayed"]]
    assert split["ner_tags"] == [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-PER", "O"]]
    rows = tokenize_splits(ner, {"train": split}, tokenizer)["train"]
    first = rows[0]
    word_ids = tokenizer(split["tokens"][0], is_split_into_words=True).word_ids()
    # Each word's tag sits on its first sub-token only.
    expected = align(word_ids, [1, 2, 0, 3, 0], None)
    assert first["labels"] == expected
    assert [label for label in first["labels"] if label != IGNORED] == [1, 2, 0, 3, 0]
    assert len(first["input_ids"]) == len(first["labels"])
    # All sub-tokens tagged: "smithson" is split, so I-PER appears on its later pieces too.
    all_tokens = recipe(files={"train": str(path)}, format="conll", labels=TAGS)
    all_tokens.data.label_all_tokens = True
    tagged = tokenize_splits(all_tokens, {"train": split}, tokenizer)["train"][0]["labels"]
    assert tagged == align(word_ids, [1, 2, 0, 3, 0], inside_ids(TAGS))


def test_json_lines_with_int_tags_and_wrong_tags_named(
    tmp_path: Path, tokenizer: PreTrainedTokenizerFast
) -> None:
    path = tmp_path / "train.jsonl"
    rows = [{"words": ["Bob", "in", "Lagos"], "tags": [1, 0, 3]}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    ner = recipe(files={"train": str(path)}, tokens_column="words", tags_column="tags", labels=TAGS)
    split = load_recipe_splits(ner)["train"]
    labels = tokenize_splits(ner, {"train": split}, tokenizer)["train"][0]["labels"]
    assert [label for label in labels if label != IGNORED] == [1, 0, 3]
    bad = [{"words": ["Bob"], "tags": ["B-ORG"]}]
    path.write_text(json.dumps(bad[0]) + "\n")
    split = load_recipe_splits(ner)["train"]
    with pytest.raises(TagError, match=r"data.labels: tag 'B-ORG' in the data is not one of"):
        tokenize_splits(ner, {"train": split}, tokenizer)
    path.write_text(json.dumps({"words": ["Bob", "x"], "tags": ["O"]}) + "\n")
    split = load_recipe_splits(ner)["train"]
    with pytest.raises(TagError, match="a sentence of 2 words has 1 tags"):
        tokenize_splits(ner, {"train": split}, tokenizer)
    missing = recipe(files={"train": str(path)}, labels=TAGS)  # columns tokens/ner_tags absent
    with pytest.raises(TagError, match=r"data.tokens_column: 'tokens' is not a column"):
        load_recipe_splits(missing)


def test_tag_names_from_the_datasets_class_label() -> None:
    import datasets

    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=TAGS)),
        }
    )
    split = datasets.Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[0]]}, features=features)
    assert tag_names(recipe(dataset="org/ner").data, split) == TAGS
    plain = datasets.Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[0]]})
    with pytest.raises(TagError, match="list the tag names in id order"):
        tag_names(recipe(dataset="org/ner").data, plain)


def test_metrics_count_only_tagged_positions() -> None:
    gold = np.array([[IGNORED, 1, IGNORED, 2, 0, IGNORED], [IGNORED, 3, 0, IGNORED, IGNORED, -100]])
    predicted = np.array([[4, 1, 4, 2, 0, 0], [0, 3, 3, 4, 4, 4]])
    scores = EntityMetrics(TAGS)(SimpleNamespace(predictions=predicted, label_ids=gold))
    # Sentence 1: PER(0-1) found; sentence 2: LOC(0) found, LOC(1) predicted where O is gold.
    assert scores == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "accuracy": 4 / 5}
    )
