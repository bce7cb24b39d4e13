"""``launcher predict`` in process: what it reads, where it finds the model, how sub-token
predictions become words and entities with character offsets, and the refusals of bad input.
The end-to-end checks (predicting with the runs of each workload) are in tests/e2e."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

from launcher.cli import main
from launcher.errors import LauncherError
from launcher.predict.inputs import Columns, columns_of, read_examples
from launcher.predict.source import find_source, task_of_folder
from launcher.predict.tasks import Settings, tag_words, word_predictions

TAGS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


def test_word_predictions_take_each_words_first_sub_token_and_span_all_of_it() -> None:
    # "Smithson went" as [CLS] smith ##son went [SEP]: words 0, 0, 1.
    word_ids = [None, 0, 0, 1, None]
    offsets = [[0, 0], [0, 5], [5, 8], [9, 13], [0, 0]]
    tag_ids = [0, 1, 2, 0, 0]
    scores = [0.1, 0.9, 0.5, 0.8, 0.1]
    spans, tags, word_scores = word_predictions(word_ids, tag_ids, scores, offsets, None, TAGS)
    assert spans == [(0, 8), (9, 13)]
    assert tags == ["B-PER", "O"]  # the later sub-token's I-PER does not count
    assert word_scores == [0.9, 0.8]
    # Given as words, spans are into the words joined by spaces.
    spans, _, _ = word_predictions(word_ids, tag_ids, scores, None, ["Smithson", "went"], TAGS)
    assert spans == [(0, 8), (9, 13)]


def tiny_tagger(folder: Path) -> tuple[BertForTokenClassification, PreTrainedTokenizerFast]:
    words = "Alice Smithson flew to Paris with Bob".split()
    wordpiece = BertWordPieceTokenizer(lowercase=False)
    wordpiece.train_from_iterator([" ".join(words)] * 4, vocab_size=80, min_frequency=1)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_labels=5, id2label=TAGS,
        label2id={name: index for index, name in TAGS.items()},
    )  # fmt: skip
    model = BertForTokenClassification(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_entities_carry_offsets_into_the_original_text(tmp_path: Path) -> None:
    """Whatever the (untrained) model tags, every entity's offsets cut its own text out of the
    input, its label is a tag type and its score the mean of its words' probabilities."""
    import torch

    model, tokenizer = tiny_tagger(tmp_path)
    torch.manual_seed(0)
    with torch.no_grad():  # bias the head towards entity tags so that entities appear
        model.classifier.bias.copy_(torch.tensor([-2.0, 1.0, 1.0, 1.0, 1.0]))
    from launcher.predict.inputs import Example

    text = "Alice  Smithson flew to Paris,  with Bob."
    result = tag_words(model, tokenizer, [Example(text=text)], Settings(max_length=32))
    found = result.rows[0]["entities"]
    assert found
    for entity in found:
        assert entity["text"] == text[entity["start"] : entity["end"]]
        assert entity["label"] in {"PER", "LOC"}
        assert 0.0 < entity["score"] <= 1.0
    words = {word for word in tokenizer(text).word_ids() if word is not None}
    assert len(result.tags[0]) == len(words) == 9  # one tag per word ("Paris" and "," are two)


def test_inputs_from_txt_jsonl_and_csv(tmp_path: Path) -> None:
    columns = Columns(text="review", label="sentiment")
    (tmp_path / "a.txt").write_text("first text\n\nsecond text\n")
    assert [e.text for e in read_examples(tmp_path / "a.txt", [], columns)] == [
        "first text",
        "second text",
    ]
    (tmp_path / "b.csv").write_text('review,sentiment\n"good, very",positive\nbad,negative\n')
    rows = read_examples(tmp_path / "b.csv", [], columns)
    assert [(e.text, e.gold) for e in rows] == [("good, very", "positive"), ("bad", "negative")]
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "only text", "id": 7}) + "\n")
    (row,) = read_examples(tmp_path / "c.jsonl", [], columns)  # one text column: that one
    assert (row.text, row.gold, row.extra) == ("only text", None, {"id": 7})
    (tmp_path / "d.jsonl").write_text(json.dumps({"tokens": ["Bob", "ran"], "ner_tags": [1, 0]}))
    (row,) = read_examples(tmp_path / "d.jsonl", [], Columns())
    assert (row.words, row.text, row.gold) == (["Bob", "ran"], "Bob ran", [1, 0])
    (tmp_path / "e.jsonl").write_text(json.dumps({"a": "x", "b": "y"}) + "\n")
    with pytest.raises(LauncherError, match="row 1 has no 'review' column"):
        read_examples(tmp_path / "e.jsonl", [], columns)
    with pytest.raises(LauncherError, match="is a folder"):
        read_examples(tmp_path, [], columns)
    with pytest.raises(LauncherError, match="give --input or --text, not both"):
        read_examples(tmp_path / "a.txt", ["x"], columns)


def test_source_is_a_run_or_a_model_folder(tmp_path: Path) -> None:
    tiny_tagger(tmp_path / "model")
    assert task_of_folder(tmp_path / "model") == "token_classification"
    assert find_source(tmp_path / "model", None).task == "token_classification"
    with pytest.raises(LauncherError, match="is a model folder, not a run directory"):
        find_source(tmp_path / "model", 3)
    with pytest.raises(LauncherError, match="neither a run directory"):
        find_source(tmp_path, None)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(LauncherError, match="is a file"):
        find_source(tmp_path / "file.txt", None)


def test_cli_refusals_name_the_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny_tagger(tmp_path / "model")
    for argv, message in (
        (["predict", str(tmp_path / "nope")], "does not exist"),
        (["predict", str(tmp_path / "model")], "nothing to predict"),
        (["predict", str(tmp_path / "model"), "--text", "x", "-o", str(tmp_path)], "is a folder"),
        (["predict", str(tmp_path / "model"), "--text", "x", "--batch-size", "0"], "--batch-size"),
    ):
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_cli_writes_one_row_per_text_and_scores_gold_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tiny_tagger(tmp_path / "model")
    rows = [{"tokens": ["Alice", "flew"], "ner_tags": ["B-PER", "O"]}] * 3
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out.jsonl"
    argv = ["predict", str(tmp_path / "model"), "--input", str(tmp_path / "gold.jsonl")]
    assert main([*argv, "-o", str(out), "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 3 and all(len(row["tags"]) == 2 for row in written)
    assert f"3 predictions -> {out}" in printed
    assert "metrics on 3 labelled inputs: precision" in printed


def test_a_run_trained_on_chats_reads_conversations_prompts_and_bare_texts(tmp_path: Path) -> None:
    """Its recipe says chats (here: the loss on assistant turns, conversations under the
    data's own column name): a bare text is a user's message, a conversation is answered from its
    last turn that is not the assistant's (ShareGPT keys too), a prompt template fills the
    prompt."""
    recipe = {"data": {"loss_on": "assistant", "columns": {"messages": "chat"}}}
    columns = columns_of(recipe)
    (bare,) = read_examples(None, ["Hello?"], columns)
    assert bare.messages == [{"role": "user", "content": "Hello?"}]
    rows = tmp_path / "in.jsonl"
    turns = [
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "Sky colour?"},
        {"from": "gpt", "value": "Blue"},
    ]
    rows.write_text(json.dumps({"chat": turns, "id": 7}) + "\n")
    (chat,) = read_examples(rows, [], columns)
    assert [t["role"] for t in chat.messages or []] == ["user", "assistant", "user"]
    assert (chat.text, chat.extra) == ("Sky colour?", {"id": 7})
    plain = columns_of({"data": {"template": {"prompt": "Q: {q}\nA:", "completion": "{a}"}}})
    rows.write_text(json.dumps({"q": "Why?", "a": "Because"}) + "\n")
    (pair,) = read_examples(rows, [], plain)
    assert (pair.text, pair.messages) == ("Q: Why?\nA:", None)
    (text,) = read_examples(None, ["Once upon"], plain)
    assert text.messages is None  # a text model continues a bare text
    prompt = [{"role": "user", "content": "Why?"}]
    rows.write_text(json.dumps({"prompt": prompt, "completion": [{"role": "assistant"}]}) + "\n")
    (pair,) = read_examples(rows, [], columns)
    assert (pair.messages, list(pair.extra)) == (prompt, ["completion"])
    rows.write_text(json.dumps({"chat": [{"role": "assistant", "content": "Hi"}]}) + "\n")
    with pytest.raises(LauncherError, match="row 1: the conversation has no turn to answer"):
        read_examples(rows, [], columns)
