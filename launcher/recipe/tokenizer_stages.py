"""The tokenizer stages a recipe may name, with their arguments: checked at plan time.

``tokenizer.train.pipeline`` writes a tokenizer the way the ``tokenizers`` documentation builds
one (``normalizers.NFKC()``, ``pre_tokenizers.ByteLevel(add_prefix_space=True)``,
``models.BPE()``, ``trainers.BpeTrainer(...)``, ``processors.ByteLevel(trim_offsets=True)``,
``decoders.ByteLevel()``), each stage a mapping ``{type: NAME, ARGUMENT: VALUE}``. The plan must
not import ``tokenizers`` (``plan`` stays fast on a login node), so the names and arguments live
here as a table, kept equal to the library's signatures by ``tests/recipe/test_tokenizer_stages.py``.
Stages whose arguments cannot be written in YAML (``Precompiled``'s binary map) or that a list
already expresses (``Sequence``) are left out.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from launcher.recipe.schema import TokenizerPipelineSection, TrainedTokenizerSection

Problem = tuple[str, str]


@dataclass(frozen=True)
class Arg:
    """What an argument takes: ``kind`` is bool, int, fraction, text, char, choice, pattern or
    alphabet; ``required`` when the library has no default for it."""

    kind: str
    required: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False


BOOL, INT, TEXT, CHAR = Arg("bool"), Arg("int"), Arg("text"), Arg("char")
FRACTION = Arg("fraction")
PATTERN = Arg("pattern", required=True)  # a literal string, or {regex: "..."}
ALPHABET = Arg("alphabet")  # a list of characters, or `ByteLevel` (all 256 bytes)
BEHAVIOR = ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous")
PREPEND_SCHEME = Arg("choice", choices=("always", "first", "never"))

NORMALIZERS: dict[str, dict[str, Arg]] = {
    "BertNormalizer": {
        "clean_text": BOOL,
        "handle_chinese_chars": BOOL,
        "strip_accents": Arg("bool", nullable=True),
        "lowercase": BOOL,
    },
    "ByteLevel": {},
    "Lowercase": {},
    "NFC": {},
    "NFD": {},
    "NFKC": {},
    "NFKD": {},
    "Nmt": {},
    "Prepend": {"prepend": Arg("text", required=True)},
    "Replace": {"pattern": PATTERN, "content": Arg("text", required=True)},
    "Strip": {"left": BOOL, "right": BOOL},
    "StripAccents": {},
}
PRE_TOKENIZERS: dict[str, dict[str, Arg]] = {
    "BertPreTokenizer": {},
    "ByteLevel": {"add_prefix_space": BOOL, "trim_offsets": BOOL, "use_regex": BOOL},
    "CharDelimiterSplit": {"delimiter": Arg("char", required=True)},
    "Digits": {"individual_digits": BOOL},
    "FixedLength": {"length": INT},
    "Metaspace": {"replacement": CHAR, "prepend_scheme": PREPEND_SCHEME, "split": BOOL},
    "Punctuation": {"behavior": Arg("choice", choices=BEHAVIOR)},
    "Split": {
        "pattern": PATTERN,
        "behavior": Arg("choice", required=True, choices=BEHAVIOR),
        "invert": BOOL,
    },
    "UnicodeScripts": {},
    "Whitespace": {},
    "WhitespaceSplit": {},
}
MODELS: dict[str, dict[str, Arg]] = {
    "BPE": {
        "dropout": FRACTION,
        "unk_token": TEXT,
        "continuing_subword_prefix": TEXT,
        "end_of_word_suffix": TEXT,
        "fuse_unk": BOOL,
        "byte_fallback": BOOL,
        "ignore_merges": BOOL,
    },
    "WordPiece": {
        "unk_token": TEXT,
        "max_input_chars_per_word": INT,
        "continuing_subword_prefix": TEXT,
    },
    "Unigram": {},
    "WordLevel": {"unk_token": TEXT},
}
# Each model's trainer (BpeTrainer, WordPieceTrainer, UnigramTrainer, WordLevelTrainer), less
# the arguments every algorithm shares, which are `tokenizer.train` keys (SHARED_TRAINER_ARGS).
TRAINERS: dict[str, dict[str, Arg]] = {
    "BPE": {
        "initial_alphabet": ALPHABET,
        "continuing_subword_prefix": TEXT,
        "end_of_word_suffix": TEXT,
        "max_token_length": INT,
    },
    "WordPiece": {
        "initial_alphabet": ALPHABET,
        "continuing_subword_prefix": TEXT,
        "end_of_word_suffix": TEXT,
    },
    "Unigram": {
        "initial_alphabet": ALPHABET,
        "shrinking_factor": FRACTION,
        "unk_token": TEXT,
        "max_piece_length": INT,
        "n_sub_iterations": INT,
    },
    "WordLevel": {},
}
TRAINER_CLASSES = {
    "BPE": "BpeTrainer",
    "WordPiece": "WordPieceTrainer",
    "Unigram": "UnigramTrainer",
    "WordLevel": "WordLevelTrainer",
}
SHARED_TRAINER_ARGS = ("vocab_size", "min_frequency", "special_tokens", "limit_alphabet")
# Which models' trainers take the shared arguments that not all of them take.
TAKES_MIN_FREQUENCY = ("BPE", "WordPiece", "WordLevel")
TAKES_LIMIT_ALPHABET = ("BPE", "WordPiece")
POST_PROCESSORS: dict[str, dict[str, Arg]] = {
    "BertProcessing": {"sep": Arg("text", required=True), "cls": Arg("text", required=True)},
    "ByteLevel": {"add_prefix_space": BOOL, "trim_offsets": BOOL, "use_regex": BOOL},
    "RobertaProcessing": {
        "sep": Arg("text", required=True),
        "cls": Arg("text", required=True),
        "trim_offsets": BOOL,
        "add_prefix_space": BOOL,
    },
    # Its special tokens' ids are looked up after training: the recipe names the tokens only.
    "TemplateProcessing": {"single": Arg("text", required=True), "pair": TEXT},
}
DECODERS: dict[str, dict[str, Arg]] = {
    "BPEDecoder": {"suffix": TEXT},
    "ByteFallback": {},
    "ByteLevel": {},
    "CTC": {"pad_token": TEXT, "word_delimiter_token": TEXT, "cleanup": BOOL},
    "Fuse": {},
    "Metaspace": {"replacement": CHAR, "prepend_scheme": PREPEND_SCHEME, "split": BOOL},
    "Replace": {"pattern": PATTERN, "content": Arg("text", required=True)},
    "Strip": {"content": CHAR, "left": INT, "right": INT},
    "WordPiece": {"prefix": TEXT, "cleanup": BOOL},
}
# Stage name -> (the library module its types live in, its types).
STAGES: dict[str, tuple[str, dict[str, dict[str, Arg]]]] = {
    "normalizer": ("normalizers", NORMALIZERS),
    "pre_tokenizer": ("pre_tokenizers", PRE_TOKENIZERS),
    "model": ("models", MODELS),
    "post_processor": ("processors", POST_PROCESSORS),
    "decoder": ("decoders", DECODERS),
}


def pipeline_problems(train: TrainedTokenizerSection, prefix: str) -> Iterator[Problem]:
    """Every problem of ``train.pipeline``: unknown types and arguments, wrong values, trainer
    arguments that belong elsewhere, special tokens a post-processor names but nobody adds."""
    pipeline = train.pipeline
    if pipeline is None:
        return
    at = f"{prefix}.pipeline"
    for stage in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        for key, step in stage_steps(getattr(pipeline, stage), f"{at}.{stage}"):
            yield from step_problems(stage, step, key)
    if pipeline.model is None:
        yield (
            f"{at}.model",
            f"required: the model to train ({', '.join(MODELS)}), e.g. {{type: BPE}}",
        )
    else:
        yield from step_problems("model", pipeline.model, f"{at}.model")
    model = model_type(pipeline)
    if model is not None:
        yield from trainer_problems(train, model, prefix)
        yield from unk_token_problems(train, pipeline, model, prefix)
    yield from named_special_tokens(train, pipeline, prefix)


def stage_steps(value: list[dict[str, Any]] | None, key: str) -> list[tuple[str, dict[str, Any]]]:
    """``(key path, step)`` for each step of a stage."""
    return [(f"{key}.{index}", step) for index, step in enumerate(value or [])]


def model_type(pipeline: TokenizerPipelineSection) -> str | None:
    """The pipeline's model type when it is a known one."""
    kind = (pipeline.model or {}).get("type")
    return kind if isinstance(kind, str) and kind in MODELS else None


def step_problems(stage: str, step: dict[str, Any], key: str) -> Iterator[Problem]:
    """One step: a known ``type`` of its stage, and arguments that type takes, of its kinds."""
    module, types = STAGES[stage]
    kind = step.get("type")
    if kind is None:
        yield key, f"{step!r}: a step names its `type`: one of {', '.join(types)}"
        return
    if not isinstance(kind, str) or kind not in types:
        yield f"{key}.type", unknown_name(kind, list(types), f"{module}")
        return
    yield from argument_problems(step, types[kind], key, f"{module}.{kind}")


def argument_problems(
    given: dict[str, Any], allowed: dict[str, Arg], key: str, owner: str, skip: tuple = ("type",)
) -> Iterator[Problem]:
    for name, value in given.items():
        if name in skip:
            continue
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            close = difflib.get_close_matches(str(name), list(allowed), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            yield f"{key}.{name}", f"not an argument of {owner}; {hint}its arguments: {known}"
            continue
        problem = value_problem(value, allowed[name])
        if problem:
            yield f"{key}.{name}", problem
    for name, arg in allowed.items():
        if arg.required and name not in given:
            yield f"{key}.{name}", f"required by {owner}"


def value_problem(value: Any, arg: Arg) -> str | None:
    """Why ``value`` does not fit ``arg``, or None."""
    if value is None:
        return None if arg.nullable else f"{value!r}: expected {describe_kind(arg)}"
    kind = arg.kind
    fits = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "fraction": isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0 <= value <= 1,
        "text": isinstance(value, str),
        "char": isinstance(value, str) and len(value) == 1,
        "choice": value in arg.choices,
        "pattern": isinstance(value, str)
        or (
            isinstance(value, dict) and set(value) == {"regex"} and isinstance(value["regex"], str)
        ),
        "alphabet": value == "ByteLevel"
        or (isinstance(value, list) and all(isinstance(c, str) and len(c) == 1 for c in value)),
    }[kind]
    return None if fits else f"{value!r}: expected {describe_kind(arg)}"


def describe_kind(arg: Arg) -> str:
    return {
        "bool": "true or false",
        "int": "a whole number, 0 or more",
        "fraction": "a number from 0 to 1",
        "text": "text",
        "char": "one character",
        "choice": "one of " + ", ".join(arg.choices),
        "pattern": "a literal text, or {regex: PATTERN}",
        "alphabet": "a list of single characters, or ByteLevel (all 256 bytes)",
    }[arg.kind] + (" (or null)" if arg.nullable else "")


def unknown_name(kind: Any, known: list[str], module: str) -> str:
    """An unknown type, with the one it most likely meant (case aside, or spelled close)."""
    text = str(kind)
    same_case = [name for name in known if name.lower() == text.lower()]
    close = same_case or difflib.get_close_matches(text, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{kind!r} is not one of tokenizers.{module}; {hint}allowed: {', '.join(known)}"


def trainer_problems(train: TrainedTokenizerSection, model: str, prefix: str) -> Iterator[Problem]:
    """The trainer's arguments: its own here, the shared ones as ``tokenizer.train`` keys."""
    assert train.pipeline is not None
    key = f"{prefix}.pipeline.trainer"
    owner = f"trainers.{TRAINER_CLASSES[model]}"
    for name in train.pipeline.trainer:
        if name in SHARED_TRAINER_ARGS:
            yield (
                f"{key}.{name}",
                f"set it as `{prefix}.{name}`, the key every algorithm shares (--smoke shrinks "
                "the vocabulary there)",
            )
    own = {k: v for k, v in train.pipeline.trainer.items() if k not in SHARED_TRAINER_ARGS}
    yield from argument_problems(own, TRAINERS[model], key, owner, skip=("show_progress",))
    if train.min_frequency is not None and model not in TAKES_MIN_FREQUENCY:
        yield f"{prefix}.min_frequency", f"not an argument of {owner}; drop it"
    if train.limit_alphabet is not None and model not in TAKES_LIMIT_ALPHABET:
        yield f"{prefix}.limit_alphabet", f"not an argument of {owner}; drop it"


def unk_token_problems(
    train: TrainedTokenizerSection, pipeline: TokenizerPipelineSection, model: str, prefix: str
) -> Iterator[Problem]:
    """A WordPiece model's unknown token (``[UNK]`` unless set) must be in the vocabulary, or
    the first unknown character stops encoding with an error; the others only when named."""
    unk = (pipeline.model or {}).get("unk_token", "[UNK]" if model == "WordPiece" else None)
    if model == "Unigram":
        unk = pipeline.trainer.get("unk_token")
    if isinstance(unk, str) and unk not in train.special_tokens:
        where = "trainer" if model == "Unigram" else "model"
        yield (
            f"{prefix}.special_tokens",
            f"the {model} {where}'s unk_token {unk!r} must be one of them, or unknown text "
            f"cannot be encoded; add {unk!r}",
        )


def named_special_tokens(
    train: TrainedTokenizerSection, pipeline: TokenizerPipelineSection, prefix: str
) -> Iterator[Problem]:
    """Tokens a post-processor inserts (``[CLS]``, ``[SEP]``) need an id: they must be among
    the special tokens the trainer places in the vocabulary."""
    for key, step in stage_steps(pipeline.post_processor, f"{prefix}.pipeline.post_processor"):
        for name, token in template_tokens(step):
            if token not in train.special_tokens:
                yield (
                    f"{key}.{name}",
                    f"{token!r} is not in {prefix}.special_tokens, so it has no id; add it there",
                )


def template_tokens(step: dict[str, Any]) -> list[tuple[str, str]]:
    """``(argument, token)`` for each special token a post-processor step inserts."""
    kind = step.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [(name, step[name]) for name in ("cls", "sep") if isinstance(step.get(name), str)]
    if kind != "TemplateProcessing":
        return []
    found: list[tuple[str, str]] = []
    for name in ("single", "pair"):
        template = step.get(name)
        if isinstance(template, str):
            found += [(name, token) for token in special_pieces(template)]
    return found


def special_pieces(template: str) -> list[str]:
    """The special tokens of a TemplateProcessing template: ``[CLS] $A [SEP] $B:1 [SEP]:1``
    -> ``[CLS]``, ``[SEP]``, ``[SEP]`` (``$A``, ``$B``, ``$0``... are the sequences)."""
    pieces = [piece.rsplit(":", 1)[0] if ":" in piece else piece for piece in template.split()]
    return [piece for piece in pieces if piece and not piece.startswith("$")]
