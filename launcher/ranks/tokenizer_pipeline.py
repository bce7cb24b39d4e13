"""``tokenizer.train.pipeline``: the tokenizer built stage by stage, as the ``tokenizers`` docs do.

Each stage ``{type: NAME, ARGUMENT: VALUE}`` becomes ``MODULE.NAME(ARGUMENT=VALUE)``; a list of
steps becomes the module's ``Sequence``. Nothing is added that the recipe does not say: no initial
alphabet, no special tokens, no post-processor, so the recipe of the documented byte-level BPE
gives exactly the tokenizer the documented code gives. The names and arguments were checked at
plan time (``launcher/recipe/tokenizer_stages.py``); what only the library can judge (a regular
expression it cannot compile) is reported here with its recipe key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launcher.errors import LauncherError, first_line
from launcher.recipe.schema import TokenizerPipelineSection, TrainedTokenizerSection
from launcher.recipe.tokenizer_stages import (
    SHARED_TRAINER_ARGS,
    STAGES,
    TAKES_LIMIT_ALPHABET,
    TAKES_MIN_FREQUENCY,
    TRAINER_CLASSES,
    special_pieces,
    stage_steps,
)

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from tokenizers.trainers import Trainer

KEY = "tokenizer.train.pipeline"
POSITIONAL = "*"  # in an arguments mapping: those passed by position
ATTRIBUTE = {"pre_tokenizer": "pre_tokenizer", "normalizer": "normalizer", "decoder": "decoder"}


def build_from_stages(
    settings: TrainedTokenizerSection, show_progress: bool = False
) -> tuple[Tokenizer, Trainer]:
    """The untrained tokenizer (normalizer, pre-tokenizer, model, decoder) and its trainer.

    The post-processor comes after training (:func:`add_post_processor`): the special tokens
    it inserts get their ids from the trained vocabulary."""
    from tokenizers import Tokenizer

    pipeline = require_pipeline(settings)
    assert pipeline.model is not None, "require_valid: a pipeline names its model"
    tokenizer = Tokenizer(make_step("model", pipeline.model, f"{KEY}.model"))
    for stage, attribute in ATTRIBUTE.items():
        component = make_stage(stage, getattr(pipeline, stage))
        if component is not None:
            setattr(tokenizer, attribute, component)
    return tokenizer, make_trainer(settings, pipeline, show_progress)


def add_post_processor(tokenizer: Tokenizer, settings: TrainedTokenizerSection) -> None:
    """Set the pipeline's post-processor, its special tokens' ids read from ``tokenizer``."""
    pipeline = require_pipeline(settings)
    component = make_stage("post_processor", pipeline.post_processor, tokenizer)
    if component is not None:
        tokenizer.post_processor = component


def require_pipeline(settings: TrainedTokenizerSection) -> TokenizerPipelineSection:
    assert settings.pipeline is not None, "require_valid: algorithm pipeline needs its stages"
    return settings.pipeline


def make_stage(stage: str, value: Any, tokenizer: Tokenizer | None = None) -> Any:
    """One stage: its single step, or the module's ``Sequence`` of its steps (None if unset)."""
    steps = [
        make_step(stage, step, key, tokenizer) for key, step in stage_steps(value, f"{KEY}.{stage}")
    ]
    if len(steps) < 2:  # one step is that step, as the docs set it: no Sequence around it
        return steps[0] if steps else None
    return library_module(stage).Sequence(steps)


def library_module(stage: str) -> Any:
    import importlib

    return importlib.import_module(f"tokenizers.{STAGES[stage][0]}")


def make_step(stage: str, step: dict[str, Any], key: str, tokenizer: Tokenizer | None = None):
    """``MODULE.TYPE(**arguments)``, with patterns as the library's ``Regex`` where asked and a
    post-processor's tokens as ``(token, id)``."""
    kind = step["type"]
    try:
        arguments = {name: library_value(v) for name, v in step.items() if name != "type"}
        if stage == "post_processor":
            arguments = processor_arguments(kind, arguments, tokenizer)
        positional = arguments.pop(POSITIONAL, ())
        return getattr(library_module(stage), kind)(*positional, **arguments)
    except Exception as error:  # the library's own refusal (a bad regex, say)
        raise LauncherError(f"{key}: tokenizers refused {kind}: {first_line(error)}") from error


def library_value(value: Any) -> Any:
    """``{regex: PATTERN}`` -> ``tokenizers.Regex(PATTERN)``; anything else as written."""
    if isinstance(value, dict) and set(value) == {"regex"}:
        from tokenizers import Regex

        return Regex(value["regex"])
    return value


def processor_arguments(
    kind: str, arguments: dict[str, Any], tokenizer: Tokenizer | None
) -> dict[str, Any]:
    """The token ids a post-processor needs, looked up in the trained vocabulary."""
    assert tokenizer is not None, "post-processors are made after training"

    def with_id(token: str) -> tuple[str, int]:
        return token, tokenizer.token_to_id(token)

    if kind in ("BertProcessing", "RobertaProcessing"):
        # Passed by position, as the docs write them: the keyword of `cls` varies by version.
        sep, cls = with_id(arguments.pop("sep")), with_id(arguments.pop("cls"))
        return {POSITIONAL: (sep, cls), **arguments}
    if kind == "TemplateProcessing":
        templates = [arguments.get("single"), arguments.get("pair")]
        tokens = [piece for text in templates if text for piece in special_pieces(text)]
        return {**arguments, "special_tokens": [with_id(t) for t in dict.fromkeys(tokens)]}
    return arguments


def make_trainer(
    settings: TrainedTokenizerSection, pipeline: TokenizerPipelineSection, show_progress: bool
) -> Trainer:
    """The model's trainer with the recipe's arguments only: the library's defaults otherwise."""
    import importlib

    from tokenizers import pre_tokenizers

    assert pipeline.model is not None, "require_valid: a pipeline names its model"
    model = pipeline.model["type"]
    trainer_class = getattr(importlib.import_module("tokenizers.trainers"), TRAINER_CLASSES[model])
    arguments: dict[str, Any] = {
        "vocab_size": settings.vocab_size,
        "special_tokens": list(settings.special_tokens),
        "show_progress": show_progress,
    }
    if settings.min_frequency is not None and model in TAKES_MIN_FREQUENCY:
        arguments["min_frequency"] = settings.min_frequency
    if settings.limit_alphabet is not None and model in TAKES_LIMIT_ALPHABET:
        arguments["limit_alphabet"] = settings.limit_alphabet
    for name, value in pipeline.trainer.items():
        if name in SHARED_TRAINER_ARGS or name == "show_progress":
            continue
        if name == "initial_alphabet" and value == "ByteLevel":
            value = pre_tokenizers.ByteLevel.alphabet()
        arguments[name] = value
    try:
        return trainer_class(**arguments)
    except Exception as error:
        raise LauncherError(
            f"{KEY}.trainer: tokenizers refused {TRAINER_CLASSES[model]}: {first_line(error)}"
        ) from error
