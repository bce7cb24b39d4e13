"""``tokenizer.train.pipeline`` is checked at plan time, against a table equal to the library's
signatures, with the key path named, and without importing the libraries."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from launcher.errors import RecipeError
from launcher.recipe.loader import load_recipe
from launcher.recipe.tokenizer_stages import STAGES, TRAINER_CLASSES, TRAINERS, Arg

MODULES = {
    "normalizers": normalizers,
    "pre_tokenizers": pre_tokenizers,
    "models": models,
    "processors": processors,
    "decoders": decoders,
}
SAMPLES = {
    "bool": True,
    "int": 3,
    "fraction": 0.5,
    "text": "x",
    "char": "x",
    "alphabet": ["a", "b"],
}


def signature_names(cls: type) -> set[str]:
    """The parameter names of a class of the library (its Rust signature, as text)."""
    text = (cls.__text_signature__ or "()")[1:-1]
    return {re.split(r"[=:]", part)[0].strip() for part in text.split(",") if part.strip()}


def sample(arg: Arg) -> object:
    if arg.kind == "choice":
        return arg.choices[0]
    if arg.kind == "pattern":
        return "x"
    return SAMPLES[arg.kind]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_in_the_table_is_the_librarys_with_its_arguments(stage: str) -> None:
    module_name, types = STAGES[stage]
    module = MODULES[module_name]
    for name, arguments in types.items():
        cls = getattr(module, name)
        values = {arg: sample(spec) for arg, spec in arguments.items()}
        positional: tuple = ()
        if stage == "post_processor" and name in ("BertProcessing", "RobertaProcessing"):
            # `sep` and `cls` as the docs name them; passed by position (see tokenizer_pipeline).
            del values["sep"], values["cls"]
            positional = (("[SEP]", 1), ("[CLS]", 0))
        if name == "TemplateProcessing":  # templates are text with a grammar of their own
            values = {"single": "$A", "pair": "$A $B"}
        assert set(values) <= signature_names(cls), name
        cls(*positional, **values)  # the library takes each argument with a value of its kind


def test_every_trainer_argument_is_the_librarys() -> None:
    for model, arguments in TRAINERS.items():
        cls = getattr(trainers, TRAINER_CLASSES[model])
        assert set(arguments) <= signature_names(cls), model
        cls(**{arg: sample(spec) for arg, spec in arguments.items()})


def write(tmp_path: Path, train: dict, task: str = "sft") -> Path:
    recipe = {
        "name": "t",
        "task": task,
        "model": {"architecture": "mistral"},
        "tokenizer": {"train": {"vocab_size": 500, **train}},
        "data": {"dataset": "org/corpus"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def problems(tmp_path: Path, train: dict) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path, train))
    return [f"{p.key}: {p.message}" for p in caught.value.problems]


BPE = {"type": "BPE"}
P = "tokenizer.train.pipeline"


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        (
            {"pipeline": {"model": BPE, "pre_tokenizer": [{"type": "bytelevel"}]}},
            f"{P}.pre_tokenizer.0.type: 'bytelevel' is not one of tokenizers.pre_tokenizers; "
            "did you mean 'ByteLevel'?",
        ),
        (
            {"pipeline": {"model": BPE, "pre_tokenizer": [{"type": "ByteLevel", "add_prefix": 1}]}},
            f"{P}.pre_tokenizer.0.add_prefix: not an argument of pre_tokenizers.ByteLevel; "
            "did you mean 'add_prefix_space'?",
        ),
        (
            {"pipeline": {"model": BPE, "decoder": [{"type": "ByteLevel"}, {"nope": 1}]}},
            f"{P}.decoder.1: {{'nope': 1}}: a step names its `type`",
        ),
        (
            {"pipeline": {"model": {"type": "BPE", "dropout": 2}}},
            f"{P}.model.dropout: 2: expected a number from 0 to 1",
        ),
        (
            {"pipeline": {"model": BPE, "normalizer": [{"type": "Replace", "content": "x"}]}},
            f"{P}.normalizer.0.pattern: required by normalizers.Replace",
        ),
        ({"pipeline": {"normalizer": [{"type": "NFKC"}]}}, f"{P}.model: required"),
        (
            {"pipeline": {"model": BPE, "trainer": {"vocab_size": 100}}},
            f"{P}.trainer.vocab_size: set it as `tokenizer.train.vocab_size`",
        ),
        (
            {"pipeline": {"model": BPE, "trainer": {"shrinking_factor": 0.5}}},
            f"{P}.trainer.shrinking_factor: not an argument of trainers.BpeTrainer",
        ),
        (
            {"pipeline": {"model": {"type": "Unigram"}}, "min_frequency": 2},
            "tokenizer.train.min_frequency: not an argument of trainers.UnigramTrainer",
        ),
        (
            {"pipeline": {"model": {"type": "WordPiece"}}},
            "tokenizer.train.special_tokens: the WordPiece model's unk_token '[UNK]' must be one",
        ),
        (
            {
                "special_tokens": ["[CLS]"],
                "pipeline": {
                    "model": BPE,
                    "post_processor": [{"type": "TemplateProcessing", "single": "[CLS] $A [SEP]"}],
                },
            },
            f"{P}.post_processor.0.single: '[SEP]' is not in tokenizer.train.special_tokens",
        ),
        (
            {"algorithm": "wordpiece", "special_tokens": ["[UNK]"], "pipeline": {"model": BPE}},
            f"{P}: set together with `algorithm: wordpiece` (a preset); use one of the two",
        ),
        ({"algorithm": "pipeline"}, f"{P}: required by `algorithm: pipeline`"),
        (
            {"lowercase": True, "pipeline": {"model": BPE}},
            "tokenizer.train.lowercase: a preset's setting; with a pipeline, write a "
            "`{type: Lowercase}` step",
        ),
        (
            {"pipeline": {"model": BPE, "decoder": {"type": "ByteLevel"}}},
            f"{P}.decoder: {{'type': 'ByteLevel'}}: input should be a valid list",
        ),
    ],
)
def test_pipeline_mistakes_are_refused_at_plan_time_with_their_key(
    tmp_path: Path, train: dict, expected: str
) -> None:
    found = problems(tmp_path, train)
    assert any(line.startswith(expected) for line in found), found


@pytest.mark.process
def test_the_documented_pipeline_plans_without_importing_the_libraries(tmp_path: Path) -> None:
    pipeline = {
        "normalizer": [
            {"type": "NFKC"},
            {"type": "Replace", "pattern": {"regex": " +"}, "content": " "},
        ],
        "pre_tokenizer": [{"type": "ByteLevel", "add_prefix_space": True}],
        "model": BPE,
        "trainer": {"initial_alphabet": "ByteLevel", "max_token_length": 16},
        "post_processor": [{"type": "ByteLevel", "trim_offsets": True}],
        "decoder": [{"type": "ByteLevel"}],
    }
    path = write(tmp_path, {"min_frequency": 3, "pipeline": pipeline})
    code = (
        "import sys; from launcher.recipe.loader import load_recipe; "
        f"r = load_recipe({str(path)!r}); assert r.tokenizer.train.algorithm == 'pipeline'; "
        "heavy = {'tokenizers', 'transformers', 'torch'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
