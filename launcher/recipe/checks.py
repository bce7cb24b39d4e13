"""Checks that span several recipe fields; each returns (key path, message) pairs.

Field types and ranges are the schema's job. These catch combinations the libraries would reject
late (inside a rank, after minutes of start-up) or, worse, accept and silently change: a ZeRO stage
under DDP, an offloaded optimizer that is not the one asked for, a best-model metric nothing computes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator

from launcher.architectures import (
    AUTO_MODELS,
    CONFIG_ALIASES,
    CONFIG_FIELDS,
    DECODERS,
    DECODERS_BRIEFLY,
    ENCODERS,
    unknown_config_fields,
)
from launcher.errors import quoted
from launcher.recipe.chat_template import template_problem
from launcher.recipe.data_checks import data_option_problems
from launcher.recipe.data_sources import mixture_problems, source_files, source_option_problems
from launcher.recipe.passthrough import check_passthrough
from launcher.recipe.schema import (
    DataSection,
    Recipe,
    TokenizerSection,
    TrainedTokenizerSection,
    split_name,
)
from launcher.recipe.tokenizer_stages import pipeline_problems
from launcher.transformers_types import DECODER_HEADS, TRANSFORMERS_VERSION

Problem = tuple[str, str]

# Decoders named first in a message that lists some (the whole list is in a generated file).
WELL_KNOWN_DECODERS = ("mistral", "llama", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2")

BITSANDBYTES_OPTIMIZERS = ("paged_adamw_32bit", "paged_adamw_8bit", "adamw_8bit")
# Under ZeRO optimizer offload accelerate maps every optimizer to DeepSpeedCPUAdam (non-AdamW ones
# with adamw_mode=False, i.e. plain Adam): only AdamW keeps its meaning.
OFFLOADABLE_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")
# Size fields of the transformers configs the plan counts parameters from (Mistral, Llama, BERT,
# DistilBERT). `model.config` is free-form, so the schema cannot type them: a string, a zero or a
# negative here would crash the parameter count or plan a model with negative memory.
MODEL_SIZE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "type_vocab_size",
    "dim",
    "hidden_dim",
    "n_layers",
    "n_heads",
)
OPTIONAL_SIZE_KEYS = ("num_key_value_heads", "head_dim")  # null: derived from the others
# What file systems allow (Linux NAME_MAX and PATH_MAX): a longer name is no folder and no hub id,
# and asking the file system about it raises instead of answering "no such file".
NAME_MAX_BYTES = 255
PATH_MAX_BYTES = 4096
METRICS_BY_TASK = {
    "sft": ("loss", "eval_loss"),
    "mlm": ("loss", "eval_loss", "perplexity", "eval_perplexity"),
    "classification": (
        "loss",
        "eval_loss",
        "accuracy",
        "eval_accuracy",
        "precision",
        "eval_precision",
        "recall",
        "eval_recall",
        "f1",
        "eval_f1",
    ),  # fmt: skip
}
# Entity-level precision, recall and F1, and word accuracy: the same names as classification's.
METRICS_BY_TASK["token_classification"] = METRICS_BY_TASK["classification"]


def check_recipe(recipe: Recipe) -> list[Problem]:
    """Every cross-field problem in ``recipe``, in a stable order."""
    checks: list[Callable[[Recipe], Iterator[Problem]]] = [
        check_model,
        check_adapters,
        check_model_sizes,
        check_model_config_fields,
        check_checkpoint_storage,
        check_paths,
        check_tokenizer,
        check_data,
        check_distributed,
        check_evaluation,
        check_warmup,
        check_passthrough,
    ]
    return [problem for check in checks for problem in check(recipe)]


def check_model(recipe: Recipe) -> Iterator[Problem]:
    model = recipe.model
    if not model.pretrained and not model.architecture:
        yield "model", "set `pretrained` (hub id or folder) or `architecture` to build from config"
    if model.pretrained and model.config and not model.architecture:
        yield "model.config", "config fields need `model.architecture` to know what they shape"
    if model.architecture:
        wanted = DECODERS if recipe.task == "sft" else ENCODERS if recipe.task == "mlm" else None
        if wanted and model.architecture not in wanted:
            allowed = ", ".join(wanted) if wanted is ENCODERS else DECODERS_BRIEFLY
            yield (
                "model.architecture",
                (f"{model.architecture!r} cannot do task {recipe.task!r}; allowed: {allowed}"),
            )
        yield from head_problems(recipe.task, model.architecture)


def head_problems(task: str, architecture: str) -> Iterator[Problem]:
    """A decoder asked for a classifier head it does not have (most MoE and multimodal ones): the
    rank's ``AutoModelFor...`` would fail after start-up."""
    having = DECODER_HEADS.get(task)
    if having is None or architecture not in DECODERS or architecture in having:
        return
    auto_class = AUTO_MODELS[task]
    examples = ", ".join(name for name in WELL_KNOWN_DECODERS if name in having)
    yield (
        "model.architecture",
        f"{architecture!r} has no {auto_class} model in transformers {TRANSFORMERS_VERSION}, so "
        f"it cannot do task {task!r}; allowed: {', '.join(ENCODERS)} or a decoder with one "
        f"({examples}...: DECODER_HEADS of launcher/transformers_types.py)",
    )


def check_adapters(recipe: Recipe) -> Iterator[Problem]:
    """Quantized weights cannot be trained: only adapters on top of them can (QLoRA)."""
    model = recipe.model
    if model.quantization != "none" and model.lora is None:
        yield (
            "model.quantization",
            f"{model.quantization!r} weights are frozen: set `model.lora` to train adapters on "
            "them (QLoRA), or drop the quantization",
        )
    if model.lora is not None and isinstance(model.lora.target_modules, list):
        if not model.lora.target_modules:
            yield "model.lora.target_modules", "name at least one module, or use all-linear"


def check_model_sizes(recipe: Recipe) -> Iterator[Problem]:
    for section, config in (
        ("model.config", recipe.model.config),
        ("smoke.tiny_config", recipe.smoke.tiny_config),
    ):
        for key in MODEL_SIZE_KEYS:
            value = config.get(key)
            if value is None and (key not in config or key in OPTIONAL_SIZE_KEYS):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                yield f"{section}.{key}", f"{value!r}: must be a positive whole number"


def check_model_config_fields(recipe: Recipe) -> Iterator[Problem]:
    """Each ``model.config`` (and ``smoke.tiny_config``) key must be a field of the architecture's
    transformers config: the config class would keep a typo as an attribute nobody reads."""
    architecture = recipe.model.architecture
    if architecture not in CONFIG_FIELDS:
        return
    own = sorted(CONFIG_FIELDS[architecture])
    aliases = CONFIG_ALIASES.get(architecture, {})
    for section, config in (
        ("model.config", recipe.model.config),
        ("smoke.tiny_config", recipe.smoke.tiny_config),
    ):
        for key in unknown_config_fields(architecture, config):
            close = difflib.get_close_matches(key, [*own, *aliases], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            yield (
                f"{section}.{key}",
                f"not a field of the {architecture} config; {hint}its fields: {', '.join(own)}",
            )
        for alias, name in aliases.items():
            if alias in config and name in config:
                yield (
                    f"{section}.{alias}",
                    f"the same field as {section}.{name} (the {architecture} config calls it "
                    f"{name}); set one of them",
                )


def check_paths(recipe: Recipe) -> Iterator[Problem]:
    """Names the plan looks up on disk (a local model or tokenizer folder, data files) must be
    names a file system can hold, or the lookup itself fails."""
    named = [
        ("model.pretrained", recipe.model.pretrained),
        ("tokenizer.pretrained", recipe.tokenizer.pretrained),
    ]
    for split, files in (recipe.data.files or {}).items():
        listed = [files] if isinstance(files, str) else files
        named += [(f"data.files.{split}", name) for name in listed]
    named += source_files(recipe.data)
    for key, name in named:
        problem = unusable_path(name) if name else None
        if problem:
            yield key, problem


def unusable_path(name: str) -> str | None:
    shown = quoted(name)
    if "\0" in name:
        return f"{shown}: contains a NUL character, which no file name can"
    if len(name.encode()) >= PATH_MAX_BYTES:
        return f"{shown}: longer than the {PATH_MAX_BYTES} bytes a path may have"
    if any(len(part.encode()) > NAME_MAX_BYTES for part in name.split("/")):
        return f"{shown}: has a name longer than the {NAME_MAX_BYTES} bytes a file system allows"
    return None


# The role each well-known special token plays; the first token found for a role takes it.
SPECIAL_TOKEN_ROLES: dict[str, str] = {
    "[PAD]": "pad_token",
    "<pad>": "pad_token",
    "[UNK]": "unk_token",
    "<unk>": "unk_token",
    "[CLS]": "cls_token",
    "[SEP]": "sep_token",
    "[MASK]": "mask_token",
    "<mask>": "mask_token",
    "<s>": "bos_token",
    "</s>": "eos_token",
    "<|endoftext|>": "eos_token",  # GPT-2's single special token
}
# `pad_token` values that mean "reuse this existing token" rather than a literal token.
PAD_ALIASES = ("eos", "unk", "bos")


def check_tokenizer(recipe: Recipe) -> Iterator[Problem]:
    yield from tokenizer_problems(recipe.tokenizer, recipe.model.pretrained)
    yield from trained_tokenizer_roles(recipe)


def trained_tokenizer_roles(recipe: Recipe) -> Iterator[Problem]:
    """A tokenizer trained from scratch has only the special tokens the recipe names: those the
    task's batches need must be among them, or the run fails at its first batch ("Asking to pad
    but the tokenizer does not have a padding token")."""
    tokenizer = recipe.tokenizer
    if tokenizer.train is None or tokenizer.train.algorithm == "retrain":
        return
    named = [*tokenizer.train.special_tokens, *tokenizer.special_tokens]
    roles = {SPECIAL_TOKEN_ROLES[token] for token in named if token in SPECIAL_TOKEN_ROLES}
    pad = tokenizer.pad_token
    if pad is not None and (pad not in PAD_ALIASES or f"{pad}_token" in roles):
        roles.add("pad_token")
    padded = ("classification", "token_classification", "mlm")
    needed = {"pad_token": "[PAD]"} if recipe.task in padded else {}
    if recipe.task == "mlm":
        needed["mask_token"] = "[MASK]"
    if recipe.task in padded and recipe.model.architecture in ENCODERS:
        needed.update(cls_token="[CLS]", sep_token="[SEP]")
    missing = [token for role, token in needed.items() if role not in roles]
    if missing:
        why = {
            "[PAD]": "batches are padded",
            "[MASK]": "masked-LM hides tokens behind it",
            "[CLS]": f"{recipe.model.architecture} reads each sample from it",
            "[SEP]": f"{recipe.model.architecture} ends each sample with it",
        }
        yield (
            "tokenizer.train.special_tokens",
            f"a {recipe.task} tokenizer trained here needs {', '.join(map(repr, missing))} "
            f"({'; '.join(why[token] for token in missing)}); add "
            f"{'them' if len(missing) > 1 else 'it'}",
        )


def tokenizer_problems(
    tokenizer: TokenizerSection, model_pretrained: str | None
) -> Iterator[Problem]:
    """The tokenizer rules, in one place: the plan checks them, and so does the tokenizer stage
    when a library user calls it directly."""
    if tokenizer.train is None and not tokenizer.pretrained and not model_pretrained:
        yield "tokenizer", "set `pretrained` (hub id or folder) or `train` to train one on the data"
    if tokenizer.train and tokenizer.train.algorithm == "retrain" and not tokenizer.pretrained:
        yield (
            "tokenizer.train.algorithm",
            "'retrain' needs `tokenizer.pretrained` as its starting point",
        )
    train = tokenizer.train
    if (
        train
        and train.algorithm == "wordpiece"
        and not {"[UNK]", "<unk>"} & set(train.special_tokens)
    ):
        yield "tokenizer.train.special_tokens", "wordpiece needs an unknown token: add '[UNK]'"
    if train and train.algorithm == "retrain":
        for key in ("lowercase", "add_prefix_space"):
            if getattr(train, key):
                yield (
                    f"tokenizer.train.{key}",
                    (
                        "'retrain' keeps the pretrained tokenizer's pipeline; this setting would be "
                        "ignored, so drop it"
                    ),
                )
    if tokenizer.train and tokenizer.pretrained and tokenizer.train.algorithm != "retrain":
        yield (
            "tokenizer.pretrained",
            (
                f"set together with `train.algorithm: {tokenizer.train.algorithm}`; "
                "use `algorithm: retrain` to retrain it, or drop one of the two"
            ),
        )
    if train:
        yield from pipeline_rules(train)
    if tokenizer.chat_template is not None:
        problem = template_problem(tokenizer.chat_template)
        if problem:
            yield "tokenizer.chat_template", problem


def pipeline_rules(train: TrainedTokenizerSection) -> Iterator[Problem]:
    """A pipeline and a preset are two ways to say what is trained: one of them, not both; a
    pipeline says lowercasing and prefix spaces by its stages (``tokenizer_stages``)."""
    if train.algorithm == "pipeline" and train.pipeline is None:
        yield (
            "tokenizer.train.pipeline",
            "required by `algorithm: pipeline`: the stages, at least `model: {type: BPE}`",
        )
    if train.pipeline is not None and train.algorithm != "pipeline":
        yield (
            "tokenizer.train.pipeline",
            f"set together with `algorithm: {train.algorithm}` (a preset); use one of the two",
        )
    if train.pipeline is None:
        return
    stages = {
        "lowercase": "a `{type: Lowercase}` step in pipeline.normalizer",
        "add_prefix_space": "`add_prefix_space: true` on the ByteLevel pre_tokenizer",
    }
    for key, instead in stages.items():
        if getattr(train, key):
            yield f"tokenizer.train.{key}", f"a preset's setting; with a pipeline, write {instead}"
    yield from pipeline_problems(train, "tokenizer.train")


def data_source_problems(data: DataSection) -> Iterator[Problem]:
    """One source of data: a hub dataset or local files (a tokenizer-only recipe's rule too)."""
    if not data.dataset and not data.files and not data.sources:
        yield "data", "set `dataset` (hub id), `files` (local files by split) or `sources`"
    if data.dataset and data.files:
        yield "data.files", "set together with `data.dataset`; use one of the two"
    yield from mixture_problems(data)


def check_data(recipe: Recipe) -> Iterator[Problem]:
    data = recipe.data
    yield from data_source_problems(data)
    if data.files:
        for key, split in (
            ("data.train_split", data.train_split),
            ("data.eval_split", data.eval_split),
        ):
            name = split_name(split) if split else None
            if name and name not in data.files:
                yield key, f"{split!r}: no such split in data.files (has: {', '.join(data.files)})"
    if recipe.task == "classification" and (not data.labels or len(data.labels) < 2):
        yield "data.labels", "classification needs the label names, at least two, in id order"
    yield from token_classification_data(recipe)
    yield from data_option_problems(recipe)
    yield from source_option_problems(recipe)
    if data.labels and len(set(data.labels)) != len(data.labels):
        yield "data.labels", f"{data.labels}: label names must be distinct"
    if data.eval_split and data.eval_fraction:
        yield "data.eval_fraction", "set together with `data.eval_split`; use one of the two"


def token_classification_data(recipe: Recipe) -> Iterator[Problem]:
    """Tags need names: local files carry no ``ClassLabel`` feature, so the recipe lists them
    (a hub dataset's feature can name them). CoNLL files hold tagged words, no other task's rows."""
    data = recipe.data
    if recipe.task != "token_classification":
        if data.format == "conll":
            yield "data.format", f"'conll' files hold tagged words: task {recipe.task!r} reads text"
        return
    if data.labels is not None and len(data.labels) < 2:
        yield "data.labels", "token classification needs the tag names, at least two, in id order"
    if data.files and not data.labels:
        yield (
            "data.labels",
            "token classification of local files needs the tag names in id order "
            "(e.g. [O, B-PER, I-PER, B-LOC, I-LOC])",
        )
    if data.tokens_column == data.tags_column:
        yield "data.tags_column", f"{data.tags_column!r} is also data.tokens_column"


def check_distributed(recipe: Recipe) -> Iterator[Problem]:
    dist = recipe.distributed
    if dist.strategy == "ddp":
        for key, value, default in (
            ("zero_stage", dist.zero_stage, 0),
            ("offload_optimizer", dist.offload_optimizer, "none"),
            ("offload_parameters", dist.offload_parameters, "none"),
        ):
            if value != default:
                yield f"distributed.{key}", f"{value!r} needs `distributed.strategy: deepspeed`"
        return
    if dist.offload_optimizer != "none" and dist.zero_stage == 0:
        yield "distributed.offload_optimizer", "needs `zero_stage` 1, 2 or 3"
    if dist.offload_parameters != "none" and dist.zero_stage != 3:
        yield "distributed.offload_parameters", f"needs `zero_stage: 3` (got {dist.zero_stage})"
    nvme = [name for name in ("offload_optimizer", "offload_parameters")
            if getattr(dist, name) == "nvme"]  # fmt: skip
    for name in nvme:
        if dist.zero_stage != 3:
            yield f"distributed.{name}", f"`nvme` needs `zero_stage: 3` (got {dist.zero_stage})"
    if nvme and not (dist.nvme_path and dist.nvme_path.startswith("/")):
        yield "distributed.nvme_path", "offloading to `nvme` needs an absolute folder on each node"
    if dist.nvme_path and not nvme:
        yield "distributed.nvme_path", "used only with an offload to `nvme`"
    optimizer = recipe.training.optimizer
    if dist.offload_optimizer != "none" and optimizer not in OFFLOADABLE_OPTIMIZERS:
        yield (
            "training.optimizer",
            (
                f"{optimizer!r} would be silently replaced by DeepSpeed's CPUAdam under "
                f"`distributed.offload_optimizer: {dist.offload_optimizer}`; use `adamw_torch` "
                "(runs as CPUAdam) "
                "or turn the offload off"
            ),
        )


def check_evaluation(recipe: Recipe) -> Iterator[Problem]:
    training, data = recipe.training, recipe.data
    has_eval_data = bool(data.eval_split) or data.eval_fraction > 0
    if training.eval_strategy != "no" and not has_eval_data:
        yield (
            "training.eval_strategy",
            (
                f"{training.eval_strategy!r} needs evaluation data: set `data.eval_split` "
                "or `data.eval_fraction`"
            ),
        )
    if training.eval_strategy == "steps" and training.eval_steps is None:
        yield "training.eval_steps", "required when `eval_strategy: steps`"
    if not training.load_best_model_at_end:
        return
    saving = recipe.checkpointing
    if training.eval_strategy != saving.strategy or saving.strategy == "no":
        yield (
            "training.load_best_model_at_end",
            (
                f"needs evaluation and saving on the same cadence (eval_strategy "
                f"{training.eval_strategy!r}, checkpointing.strategy {saving.strategy!r})"
            ),
        )
    elif (
        saving.strategy == "steps"
        and training.eval_steps
        and saving.every_steps % training.eval_steps
    ):
        yield (
            "checkpointing.every_steps",
            (
                f"{saving.every_steps} must be a multiple of training.eval_steps "
                f"({training.eval_steps}) to keep the best model"
            ),
        )
    metric = training.metric_for_best_model or "loss"
    allowed = METRICS_BY_TASK[recipe.task]
    if metric not in allowed:
        yield (
            "training.metric_for_best_model",
            (f"{metric!r} is not computed for task {recipe.task!r}; allowed: {', '.join(allowed)}"),
        )


def check_checkpoint_storage(recipe: Recipe) -> Iterator[Problem]:
    saving = recipe.checkpointing
    if not saving.use_node_local_storage:
        if saving.node_local_dir is not None:
            yield "checkpointing.node_local_dir", "only used with `use_node_local_storage: true`"
        return
    if recipe.distributed.strategy != "deepspeed":
        message = (
            "a DeepSpeed option; DDP checkpoints are written once, by rank 0, to the run directory"
        )
        yield "checkpointing.use_node_local_storage", message
    if saving.node_local_dir is None:
        yield (
            "checkpointing.node_local_dir",
            "required with `use_node_local_storage: true`: a folder on each node's own disk, "
            "e.g. /local/scratch/checkpoints",
        )
    elif not saving.node_local_dir.startswith("/"):
        yield "checkpointing.node_local_dir", f"{saving.node_local_dir!r} must be an absolute path"


def check_warmup(recipe: Recipe) -> Iterator[Problem]:
    if recipe.training.warmup_steps and recipe.training.warmup_ratio:
        yield "training.warmup_ratio", "set together with `warmup_steps`; use one of the two"
