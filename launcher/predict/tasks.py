"""One batch of predictions per task, as rows for the output file, plus what the metrics need.

- classification: the label and its probability (softmax of the logits);
- token classification: entities with label, score and character offsets into the text, made
  like the ``simple`` aggregation of a token-classification pipeline: each word takes the tag of
  its first sub-token (score: that tag's probability), words join into entities by their tags
  (``launcher.ranks.entities``), an entity's score is the mean of its words';
- MLM: the top-k fillers of every mask token;
- SFT: the continuation the model generates (greedy, ``max_new_tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from launcher.errors import LauncherError
from launcher.predict.inputs import Example


@dataclass
class Settings:
    max_length: int
    top_k: int = 5
    max_new_tokens: int = 50


@dataclass
class BatchResult:
    rows: list[dict[str, Any]]
    logits: Any = None  # classification: the batch's logits, for the metrics
    tags: list[list[str]] = field(default_factory=list)  # token classification: tags per word


def predict_batch(task: str, model: Any, tokenizer: Any, batch: list[Example], settings: Settings):
    import torch

    with torch.inference_mode():
        if task == "classification":
            return classify(model, tokenizer, batch, settings)
        if task == "token_classification":
            return tag_words(model, tokenizer, batch, settings)
        if task == "mlm":
            return fill_masks(model, tokenizer, batch, settings)
        return generate(model, tokenizer, batch, settings)


def encode(tokenizer: Any, texts: Any, settings: Settings, model: Any, **options: Any) -> Any:
    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=settings.max_length,
        padding=True,
        return_tensors="pt",
        **options,
    )
    return encoded.to(model.device)


def classify(model: Any, tokenizer: Any, batch: list[Example], settings: Settings) -> BatchResult:
    encoded = encode(tokenizer, [example.text for example in batch], settings, model)
    logits = model(**encoded).logits.float()
    probabilities = logits.softmax(dim=-1)
    names = model.config.id2label
    rows = []
    for example, row in zip(batch, probabilities.tolist(), strict=True):
        best = max(range(len(row)), key=row.__getitem__)
        rows.append(
            {
                **example.extra,
                "text": example.text,
                "label": names.get(best, str(best)),
                "score": round(row[best], 6),
                **({"gold": example.gold} if example.gold is not None else {}),
            }
        )
    return BatchResult(rows, logits=logits.cpu().numpy())


def tag_words(model: Any, tokenizer: Any, batch: list[Example], settings: Settings) -> BatchResult:
    """Entities of each text (or of each given sentence of words)."""
    from launcher.ranks.entities import entities

    words_given = all(example.words is not None for example in batch)
    if words_given:
        texts: Any = [example.words for example in batch]
        encoded = encode(tokenizer, texts, settings, model, is_split_into_words=True)
        offsets = None
    else:
        texts = [example.text for example in batch]
        encoded = encode(tokenizer, texts, settings, model, return_offsets_mapping=True)
        offsets = encoded.pop("offset_mapping").tolist()
    probabilities = model(**encoded).logits.float().softmax(dim=-1)
    best_scores, best_ids = probabilities.max(dim=-1)
    names = model.config.id2label
    result = BatchResult(rows=[])
    for i, example in enumerate(batch):
        spans, tags, scores = word_predictions(
            encoded.word_ids(i),
            best_ids[i].tolist(),
            best_scores[i].tolist(),
            offsets[i] if offsets is not None else None,
            example.words,
            names,
        )
        found = []
        for entity in entities(tags):
            start, end = spans[entity.start][0], spans[entity.end][1]
            words_scores = scores[entity.start : entity.end + 1]
            found.append(
                {
                    "label": entity.label,
                    "score": round(sum(words_scores) / len(words_scores), 6),
                    "start": start,
                    "end": end,
                    "text": example.text[start:end],
                }
            )
        row: dict[str, Any] = {**example.extra, "text": example.text, "entities": found}
        if example.words is not None:
            # Words past max_length were not seen: they are tagged O.
            tags = tags + ["O"] * (len(example.words) - len(tags))
            row["tags"] = tags
            if example.gold is not None:
                row["gold"] = example.gold
        result.tags.append(tags)
        result.rows.append(row)
    return result


def word_predictions(
    word_ids: list[int | None],
    tag_ids: list[int],
    scores: list[float],
    offsets: list[list[int]] | None,
    words: list[str] | None,
    names: dict[int, str],
) -> tuple[list[tuple[int, int]], list[str], list[float]]:
    """Per word: its character span, its tag (its first sub-token's) and that tag's probability.

    Spans come from the tokenizer's offsets for a text, and from the words joined by single
    spaces for a sentence given as words."""
    spans: list[tuple[int, int]] = []
    tags: list[str] = []
    word_scores: list[float] = []
    starts = word_starts(words) if words is not None else None
    previous = None
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        if word != previous:
            tags.append(names.get(tag_ids[position], str(tag_ids[position])))
            word_scores.append(scores[position])
            if starts is not None and words is not None:
                spans.append((starts[word], starts[word] + len(words[word])))
            elif offsets is not None:
                spans.append((offsets[position][0], offsets[position][1]))
        elif offsets is not None and starts is None:
            spans[-1] = (spans[-1][0], offsets[position][1])
        previous = word
    return spans, tags, word_scores


def word_starts(words: list[str]) -> list[int]:
    starts, at = [], 0
    for word in words:
        starts.append(at)
        at += len(word) + 1
    return starts


def fill_masks(model: Any, tokenizer: Any, batch: list[Example], settings: Settings) -> BatchResult:
    encoded = encode(tokenizer, [example.text for example in batch], settings, model)
    probabilities = model(**encoded).logits.float().softmax(dim=-1)
    rows = []
    for i, example in enumerate(batch):
        positions = (encoded["input_ids"][i] == tokenizer.mask_token_id).nonzero().flatten()
        masks = []
        for number, position in enumerate(positions.tolist()):
            top = probabilities[i, position].topk(settings.top_k)
            fillers = [
                {"token": tokenizer.decode([token]).strip(), "score": round(score, 6)}
                for score, token in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
            masks.append({"mask": number, "fillers": fillers})
        rows.append({**example.extra, "text": example.text, "masks": masks})
    return BatchResult(rows)


def generate(model: Any, tokenizer: Any, batch: list[Example], settings: Settings) -> BatchResult:
    """Greedy continuations; prompts are padded on the left, where generation does not look."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    chats = [example.messages for example in batch if example.messages]
    if chats and not tokenizer.chat_template:
        raise LauncherError(
            "the model's tokenizer has no chat template to render the conversations with; "
            "give inputs as plain text (a `text` column), or train with tokenizer.chat_template"
        )
    if chats:  # rendered as in training, up to the assistant's turn; the template adds specials
        prompts = [
            tokenizer.apply_chat_template(
                example.messages or [{"role": "user", "content": example.text}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for example in batch
        ]
        encoded = encode(tokenizer, prompts, settings, model, add_special_tokens=False)
    else:
        encoded = encode(tokenizer, [example.text for example in batch], settings, model)
    output = model.generate(
        **encoded,
        max_new_tokens=settings.max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    new_tokens = output[:, encoded["input_ids"].shape[1] :]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    rows = [
        {**example.extra, "prompt": example.text, "generated": text}
        for example, text in zip(batch, texts, strict=True)
    ]
    return BatchResult(rows)
