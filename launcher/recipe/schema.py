"""The typed recipe: every field a recipe may set, with its type, default and one-line description.

YAML is data; this schema gives it meaning. Unknown keys are errors (``extra="forbid"``), and the
README's recipe reference is generated from these descriptions (``launcher.recipe.reference``), so
the two cannot drift. Checks that involve several fields live in ``launcher.recipe.checks`` so that
every problem is reported at once.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from launcher.architectures import ARCHITECTURES, TRANSFORMERS_VERSION

RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

TaskName = Literal["sft", "mlm", "classification", "token_classification"]
TASKS: tuple[str, ...] = get_args(TaskName)
TokenizerAlgorithm = Literal[
    "byte_level_bpe", "bpe", "char_bpe", "wordpiece", "unigram", "retrain", "pipeline"
]
# A tokenizer stage as the `tokenizers` docs write it: `{type: ByteLevel, add_prefix_space: true}`.
TokenizerStage = dict[str, Any]
Optimizer = Literal[
    "adamw_torch",
    "adamw_torch_fused",
    "adafactor",
    "sgd",
    "paged_adamw_32bit",
    "paged_adamw_8bit",
    "adamw_8bit",
]
Scheduler = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]
Precision = Literal["fp32", "bf16", "fp16"]
Cadence = Literal["no", "steps", "epoch"]
Tracker = Literal["tensorboard", "wandb", "mlflow"]
# How an SFT sample is written (TRL's dataset types): plain text, a conversation, or a prompt and
# its completion (each plain text or messages).
SampleFormat = Literal["auto", "text", "messages", "prompt_completion"]
LossOn = Literal["auto", "all", "completion", "assistant"]
# The columns `data.columns` may map onto the data's own names.
StandardColumn = Literal["messages", "prompt", "completion"]
FileFormat = Literal["auto", "csv", "json", "parquet", "text", "conll"]


class Section(BaseModel):
    """A recipe section: unknown keys are errors and values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoraSection(Section):
    r: int = Field(16, gt=0, description="Rank of each adapter (peft's `r`, axolotl's `lora_r`).")
    alpha: float = Field(
        32, gt=0, description="Scale of the adapters' output is `alpha / r` (`lora_alpha`)."
    )
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapters' input.")
    target_modules: Literal["all-linear"] | list[str] = Field(
        "all-linear",
        description="Layers that get adapters: `all-linear` (every linear layer but the output "
        "head), or module names (`[q_proj, v_proj]`).",
    )


class ModelSection(Section):
    pretrained: str | None = Field(
        None, description="Hub id (`org/name`) or local folder to load with `from_pretrained`."
    )
    architecture: str | None = Field(
        None,
        description="Architecture to build from `config` when not pretrained (a transformers "
        "`model_type`: `mistral`, `llama`, any decoder such as `qwen2`, `gemma`, `phi3`, `gpt2`, "
        "`falcon`; `distilbert`, `bert`); with `pretrained`, the architecture `--smoke` shrinks.",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields of the transformers config (`hidden_size`, `num_hidden_layers`, ...).",
    )
    trust_remote_code: bool = Field(
        False, description="Run code shipped with a hub model. Off unless you trust the repository."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel; `flash_attention_2` needs the flash-attn package."
    )
    lora: LoraSection | None = Field(
        None,
        description="Train low-rank adapters (peft LoRA) instead of every weight; the model's "
        "own weights stay frozen. The task's head (classification) is trained in full.",
    )
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none",
        description="Load the frozen weights quantized by bitsandbytes: `4bit` (NF4 with double "
        "quantization: QLoRA) or `8bit`; needs `lora`.",
    )

    @field_validator("architecture")
    @classmethod
    def architecture_is_known(cls, value: str | None) -> str | None:
        """A ``model_type`` the launcher builds: every decoder of the transformers release
        ``launcher/transformers_types.py`` was generated from, and the two encoders."""
        if value is None or value in ARCHITECTURES:
            return value
        close = difflib.get_close_matches(value.lower(), ARCHITECTURES, n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`? " if close else ""
        raise ValueError(
            f"{value!r} is not a decoder model_type of transformers {TRANSFORMERS_VERSION} "
            f"(mistral, llama, qwen2, gemma, phi3, gpt2, falcon...) nor distilbert or bert; {hint}"
            "the list: launcher/transformers_types.py"
        )


class TokenizerPipelineSection(Section):
    normalizer: list[TokenizerStage] | None = Field(
        None,
        description="Normalizer steps, applied in order (`[{type: NFKC}, {type: Lowercase}]`).",
    )
    pre_tokenizer: list[TokenizerStage] | None = Field(
        None,
        description="Pre-tokenizer steps, in order (`[{type: ByteLevel, add_prefix_space: true}]`).",
    )
    model: TokenizerStage | None = Field(
        None,
        description="Required: `{type: BPE}`, `WordPiece`, `Unigram` or `WordLevel`, with its "
        "arguments (`unk_token`, `dropout`, ...).",
    )
    trainer: dict[str, Any] = Field(
        default_factory=dict,
        description="The model's trainer's other arguments (`initial_alphabet`, "
        "`continuing_subword_prefix`, ...); `vocab_size`, `min_frequency`, `special_tokens` and "
        "`limit_alphabet` are `tokenizer.train` keys.",
    )
    post_processor: list[TokenizerStage] | None = Field(
        None,
        description="Post-processor steps (`[{type: ByteLevel, trim_offsets: true}]`, "
        "`[{type: TemplateProcessing, single: '[CLS] $A [SEP]'}]`).",
    )
    decoder: list[TokenizerStage] | None = Field(
        None, description="Decoder steps, applied in order (`[{type: ByteLevel}]`)."
    )


class TrainedTokenizerSection(Section):
    algorithm: TokenizerAlgorithm = Field(
        ...,
        description="A preset: `byte_level_bpe`, `bpe`, `char_bpe`, `wordpiece`, `unigram` (the "
        "`tokenizers` library's own pipelines), or `retrain` (`train_new_from_iterator` on "
        "`tokenizer.pretrained`); or `pipeline`, the stages of `pipeline` (implied when it is set).",
    )
    pipeline: TokenizerPipelineSection | None = Field(
        None,
        description="The tokenizer stage by stage, as the `tokenizers` docs build it: "
        "`normalizer`, `pre_tokenizer`, `model`, `trainer`, `post_processor`, `decoder`.",
    )
    vocab_size: int = Field(32000, gt=0, description="Size of the trained vocabulary.")
    min_frequency: int | None = Field(
        None,
        ge=0,
        description="Minimum count for a merge or word piece; default 2 for the presets (as the "
        "library's implementations), the trainer's own (0) for `retrain` and `pipeline`.",
    )
    special_tokens: list[str] = Field(
        default_factory=list, description="Special tokens, placed first in the vocabulary."
    )
    lowercase: bool = Field(False, description="Presets: lowercase text before tokenizing.")
    limit_alphabet: int | None = Field(
        None,
        gt=0,
        description="Most distinct initial characters kept (BPE, WordPiece; `char_bpe`: 1000).",
    )
    add_prefix_space: bool = Field(
        False, description="Byte-level BPE: treat the first word like any other word."
    )

    @model_validator(mode="before")
    @classmethod
    def pipeline_implies_its_algorithm(cls, data: Any) -> Any:
        """``pipeline:`` alone means ``algorithm: pipeline``: the stages say what is trained."""
        if isinstance(data, dict) and data.get("pipeline") is not None:
            if data.get("algorithm") is None:
                return {**data, "algorithm": "pipeline"}
        return data


class TokenizerSection(Section):
    pretrained: str | None = Field(
        None, description="Hub id or local folder; defaults to `model.pretrained` when not trained."
    )
    pad_token: str | None = Field(
        None, description="Pad token: `eos`, `unk`, `bos`, or a literal token added when missing."
    )
    special_tokens: list[str] = Field(
        default_factory=list,
        description="Extra special tokens to add; the model's embeddings are resized to match.",
    )
    train: TrainedTokenizerSection | None = Field(
        None, description="Train a tokenizer on the training text as the first stage of the run."
    )
    chat_template: str | None = Field(
        None,
        min_length=1,
        description="The Jinja chat template that renders messages (SFT), as text or the path of "
        "a `.jinja`/`.j2` file; saved with the run's tokenizer. Default: the tokenizer's own "
        "(needed when it has none).",
    )


class DataSource(Section):
    """One source of a mixture (``data.sources``): a hub dataset or local files, read as
    ``data.dataset`` / ``data.files`` would be, with its own format, columns and template."""

    dataset: str | None = Field(None, description="Hub dataset id (`org/name`).")
    dataset_config: str | None = Field(None, description="Hub dataset configuration name.")
    files: str | list[str] | None = Field(
        None,
        description="Local file(s) instead of `dataset`: together one split, this source's "
        "training rows.",
    )
    split: str = Field(
        "train",
        description="Split of `dataset` to read; slices work (`train[:5000]`, `train[10%:]`), "
        "of `files` too.",
    )
    format: FileFormat = Field("auto", description="File format of `files`, as `data.format`.")
    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description="Column separator of csv files."
    )
    text_column: str | None = Field(
        None,
        description="This source's text column, renamed to `data.text_column`; default "
        "`data.text_column`.",
    )
    columns: dict[StandardColumn, str] | None = Field(
        None,
        description="SFT: this source's names for the columns SFT reads, as `data.columns`; "
        "default `data.columns`.",
    )
    template: str | dict[str, str] | None = Field(
        None,
        description="Build this source's text (or prompt and completion) from its columns, as "
        "`data.template`; default `data.template`.",
    )
    weight: float | None = Field(
        None,
        gt=0,
        description="Share of the interleaved mixture: `weight / sum of the weights` is this "
        "source's probability (`interleave_datasets`' `probabilities`).",
    )
    samples: int | None = Field(
        None,
        gt=0,
        description="Take this many rows of the source, drawn at random as `data.train_samples` "
        "draws them, before mixing. More than the source has is an error.",
    )


class DataSection(Section):
    dataset: str | None = Field(None, description="Hub dataset id (`org/name`).")
    dataset_config: str | None = Field(None, description="Hub dataset configuration name.")
    files: dict[str, str | list[str]] | None = Field(
        None, description="Local files by split name (`train: corpus.txt`), instead of `dataset`."
    )
    sources: list[DataSource] | None = Field(
        None,
        min_length=1,
        description="Several sources mixed into the training data, instead of `dataset` / "
        "`files`: each a hub dataset or local files with its own split, format, columns and "
        "template (`data.sources[]` keys). Evaluation rows are held out of the mixture "
        "(`eval_fraction`).",
    )
    mix: Literal["auto", "interleave", "concatenate"] = Field(
        "auto",
        description="How `sources` are mixed: `interleave` (`datasets.interleave_datasets`: each "
        "row drawn from a source with probability `weight / sum of weights`, seeded by "
        "`shuffle_seed`; no weights: one row of each in turn), `concatenate` (every row of "
        "each), or `auto`: interleave when the sources have weights, else concatenate. With "
        "`shuffle`, each source is shuffled before it is interleaved, so the rows of a source "
        "that is not used up are a random subset, not its first rows.",
    )
    mix_stopping: Literal["first_exhausted", "all_exhausted"] = Field(
        "first_exhausted",
        description="Interleave: stop when the first source runs out (no row repeated; the "
        "datasets default), or when every source has (the others' rows repeat meanwhile).",
    )
    format: FileFormat = Field(
        "auto",
        description="File format; `auto` reads the extension (.jsonl is json, .tsv csv, .conll "
        "conll). `conll`: one token per line, its tag in the last column, a blank line between "
        "sentences (CoNLL-2003's `.txt` files need it said).",
    )
    delimiter: str | None = Field(
        None,
        min_length=1,
        max_length=1,
        description="Column separator of csv files; default a tab for `.tsv`, else a comma.",
    )
    column_names: list[str] | None = Field(
        None,
        min_length=1,
        description="Names of the columns of csv/tsv files that have no header row; the first "
        "line is then read as data.",
    )
    train_split: str = Field(
        "train", description="Training split; slices work (`train[:1000]`, `train[10%:]`)."
    )
    eval_split: str | None = Field(None, description="Evaluation split, if the data has one.")
    eval_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="Hold out this fraction of training data for evaluation."
    )
    train_samples: int | None = Field(
        None,
        gt=0,
        description="Train on this many rows drawn at random: `shuffle(shuffle_seed).select(range(N))` "
        "of the training split (after any `eval_fraction` hold-out), a balanced subset even of a "
        "label-sorted file, where a slice (`train[:N]`) takes the first N rows. More than the split "
        "has is an error.",
    )
    eval_samples: int | None = Field(
        None,
        gt=0,
        description="Evaluate on this many rows drawn at random, as `train_samples` does.",
    )
    text_column: str = Field("text", description="Column holding the text.")
    template: str | dict[str, str] | None = Field(
        None,
        description="Build each row's text from its columns with a Python format string "
        '(`"### Question: {q}\\n### Answer: {a}"`, a formatting function as a recipe); the filled '
        "template becomes `text_column`. SFT: a mapping `{prompt: ..., completion: ...}` makes a "
        "prompt and its completion instead (instruction data such as alpaca's). Not for token "
        "classification.",
    )
    columns: dict[StandardColumn, str] | None = Field(
        None,
        description="SFT: the data's own names for the columns SFT reads (`{messages: "
        "conversations}`, `{prompt: question, completion: answer}`); plain text is `text_column`.",
    )
    sample_format: SampleFormat = Field(
        "auto",
        description="SFT: `text` (one text column), `messages` (a list of `{role, content}` "
        "rendered by the chat template), `prompt_completion` (a prompt and its completion, each "
        "text or messages), or `auto`: from the columns, as TRL reads them.",
    )
    loss_on: LossOn = Field(
        "auto",
        description="SFT: tokens the loss is computed on: `all`, `completion` (prompt-completion "
        "data), `assistant` (the assistant turns of messages; the chat template needs "
        "`{% generation %}` markers, or one TRL knows how to add them to). `auto`: `completion` "
        "for prompt-completion data, else `all` (TRL's defaults).",
    )
    label_column: str = Field("label", description="Column holding the label (classification).")
    labels: list[str] | None = Field(
        None, description="Label names, in id order; string labels are mapped through this list."
    )
    tokens_column: str = Field(
        "tokens", description="Token classification: the column holding each sentence's words."
    )
    tags_column: str = Field(
        "ner_tags",
        description="Token classification: the column holding one tag per word (names or ids).",
    )
    label_all_tokens: bool = Field(
        False,
        description="Token classification: tag every sub-token of a word (`B-X` becomes `I-X` "
        "after the first), not only its first one; metrics then count sub-tokens.",
    )
    max_length: int = Field(512, gt=0, description="Tokens per sample (truncation and packing).")
    packing: bool = Field(True, description="SFT: pack samples into full rows (no padding).")
    group_texts: bool = Field(
        False,
        description="MLM: concatenate the tokenized texts and cut them into full blocks of "
        "`max_length` (no padding; the last partial block is dropped), instead of one padded, "
        "truncated sample per text.",
    )
    mlm_probability: float = Field(
        0.15, gt=0.0, lt=1.0, description="MLM: fraction of tokens masked."
    )
    shuffle: bool = Field(True, description="Shuffle the training data before training.")
    shuffle_seed: int = Field(42, description="Seed of that shuffle.")
    num_proc: int | None = Field(
        None,
        gt=0,
        description="Processes for tokenizing and packing; default one per core (at most 16) for "
        "splits of 20,000+ rows. The rows are the same either way.",
    )
    cache: bool = Field(
        True, description="Keep prepared (tokenized, packed) data in the cache and reuse it."
    )
    cache_dir: str | None = Field(
        None,
        description="Folder of the data cache; default `$LAUNCHER_CACHE/data`, else "
        "`~/.cache/launcher/data`. Use a shared folder on multi-node clusters.",
    )


class TrainingSection(Section):
    learning_rate: float = Field(5e-5, gt=0.0, description="Peak learning rate.")
    num_epochs: float = Field(1.0, gt=0.0, description="Epochs, unless `max_steps` is set.")
    max_steps: int | None = Field(
        None, gt=0, description="Optimizer steps; overrides `num_epochs` when set."
    )
    per_device_batch_size: int = Field(8, gt=0, description="Micro batch: sequences per rank.")
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="Micro batches per optimizer step."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    warmup_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="Warmup as a fraction of all steps (instead of steps)."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="Decoupled weight decay.")
    lr_scheduler: Scheduler = Field("linear", description="Learning-rate schedule.")
    optimizer: Optimizer = Field(
        "adamw_torch", description="Optimizer; `paged_*` and `*_8bit` are bitsandbytes ones."
    )
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm (0 = off).")
    precision: Precision = Field("bf16", description="`bf16`, `fp16` (mixed) or `fp32`.")
    seed: int = Field(42, description="Seed for model init, dropout and data order.")
    logging_steps: int = Field(10, gt=0, description="Log loss and learning rate every N steps.")
    eval_strategy: Cadence = Field("no", description="When to evaluate: `no`, `steps`, `epoch`.")
    eval_steps: int | None = Field(None, gt=0, description="Evaluate every N steps (`steps`).")
    per_device_eval_batch_size: int | None = Field(
        None, gt=0, description="Eval micro batch; defaults to `per_device_batch_size`."
    )
    load_best_model_at_end: bool = Field(
        False, description="Reload the best checkpoint (by `metric_for_best_model`) at the end."
    )
    metric_for_best_model: str | None = Field(
        None, description="Metric naming the best checkpoint (`accuracy`, `f1`, `eval_loss`, ...)."
    )
    greater_is_better: bool | None = Field(
        None, description="Whether a larger metric is better; inferred from the metric's name."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    dataloader_num_workers: int = Field(0, ge=0, description="Data loader worker processes.")
    report_to: list[Tracker] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Experiment trackers: `tensorboard`, `wandb`, `mlflow` (several at once), or "
        "`none`. One tracker run per launcher run, continued across resumes and requeues. W&B "
        "and MLflow need `pip install wandb mlflow`.",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="Any other `TrainingArguments` / `SFTConfig` field, passed through as given "
        "(`neftune_noise_alpha: 5`); fields with a recipe key are refused here, naming that key.",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def none_is_no_tracker(cls, value: Any) -> Any:
        """``none`` (or one tracker's name) as the Trainer takes it."""
        if value is None or value == "none" or value == ["none"]:
            return []
        return [value] if isinstance(value, str) else value


class DistributedSection(Section):
    strategy: Literal["ddp", "deepspeed"] = Field(
        "ddp", description="`ddp` (PyTorch DDP) or `deepspeed` (ZeRO)."
    )
    zero_stage: Literal[0, 1, 2, 3] = Field(
        0, description="DeepSpeed ZeRO stage: 0 off, 1 optimizer, 2 + gradients, 3 + parameters."
    )
    offload_optimizer: Literal["none", "cpu", "nvme"] = Field(
        "none",
        description="DeepSpeed: keep optimizer states in CPU memory (runs CPUAdam), or on "
        "NVMe (`nvme_path`, ZeRO-3).",
    )
    offload_parameters: Literal["none", "cpu", "nvme"] = Field(
        "none", description="DeepSpeed ZeRO-3: keep parameters in CPU memory, or on NVMe."
    )
    nvme_path: str | None = Field(
        None, description="With an offload to `nvme`: a folder on each node's local NVMe disk."
    )
    nodes: int = Field(1, gt=0, description="Machines; local runs use one.")
    processes_per_node: int = Field(1, gt=0, description="Ranks per machine (usually its GPUs).")
    timeout_min: float = Field(
        30,
        gt=0,
        le=24 * 60,
        description="How long a collective waits for every rank before the run stops, naming "
        "the ranks that did not arrive (instead of hanging to the time limit).",
    )
    deepspeed: dict[str, Any] = Field(
        default_factory=dict,
        description="DeepSpeed settings merged into the generated JSON (`zero_optimization: "
        "{reduce_bucket_size: 5.0e+8}`); batch sizes stay the recipe's.",
    )


class CheckpointingSection(Section):
    strategy: Cadence = Field("steps", description="When to save: `no`, `steps`, `epoch`.")
    every_steps: int = Field(500, gt=0, description="Save every N optimizer steps (`steps`).")
    keep: int | None = Field(3, gt=0, description="Checkpoints kept; older ones are deleted.")
    verify_checksums: bool = Field(
        True,
        description="Record a checksum (xxh3) of every checkpoint file, and check it before "
        "resuming: a checkpoint whose bytes changed is set aside. Off for very large "
        "checkpoints, where reading them back costs too much.",
    )
    use_node_local_storage: bool = Field(
        False,
        description="DeepSpeed: each node keeps its own shards on its own disk "
        "(`node_local_dir`) instead of the shared run directory; a requeued job must get the "
        "same nodes back to resume.",
    )
    node_local_dir: str | None = Field(
        None,
        description="With `use_node_local_storage`: an absolute folder on each node's local "
        "disk; `{node}` in it becomes the node's name.",
    )


class ResourcesSection(Section):
    gpus_per_node: int = Field(1, ge=0, description="GPUs to ask the scheduler for, per node.")
    cpus_per_task: int | None = Field(None, gt=0, description="CPU cores per node task.")
    memory_gb: int | None = Field(None, gt=0, description="Memory per node in GiB.")
    time_limit_min: int = Field(60, gt=0, description="Wall-clock limit of one job attempt.")


class TrackingSection(Section):
    project: str | None = Field(
        None, description="W&B project and MLflow experiment; default: the recipe's `name`."
    )
    entity: str | None = Field(None, description="W&B entity (team or user).")
    run_name: str | None = Field(
        None, description="Name of the tracker run; default: the run directory's name."
    )
    tags: list[str] = Field(
        default_factory=list,
        description="Tags of the tracker run (no commas: W&B reads its tags comma-separated).",
    )

    @field_validator("tags")
    @classmethod
    def tags_have_no_commas(cls, value: list[str]) -> list[str]:
        for tag in value:
            if "," in tag or not tag.strip():
                raise ValueError(f"{tag!r}: a tag is a non-empty word or phrase without commas")
        return value

    mlflow_tracking_uri: str | None = Field(
        None,
        description="MLflow tracking server or store (`http://host:5000`, `sqlite:///path.db`); "
        "wins over `$MLFLOW_TRACKING_URI`. Default: `$MLFLOW_TRACKING_URI`, else an SQLite store "
        "in the run directory (`RUN/mlflow/mlflow.db`).",
    )


class SmokeSection(Section):
    max_steps: int = Field(6, gt=0, description="Optimizer steps of a smoke run.")
    checkpoint_every: int = Field(3, gt=0, description="Save (and evaluate) every N smoke steps.")
    num_samples: int = Field(96, gt=0, description="Training samples used or generated.")
    max_length: int = Field(64, gt=0, description="Upper bound on `data.max_length`.")
    max_batch_size: int = Field(4, gt=0, description="Upper bound on the per-device batch.")
    vocab_size: int = Field(512, gt=0, description="Vocabulary of a tokenizer trained for smoke.")
    tiny_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Config fields that shrink the model; empty means the built-in tiny sizes.",
    )


class Recipe(Section):
    name: str = Field(
        ...,
        min_length=1,
        max_length=200,
        description="Run name: one folder name, the default run directory.",
    )
    description: str = Field("", description="One line shown by `launcher recipes`.")
    task: TaskName = Field(
        ..., description="`sft`, `mlm`, `classification` or `token_classification` (NER)."
    )
    model: ModelSection = Field(default_factory=ModelSection, description="What to train.")
    tokenizer: TokenizerSection = Field(
        default_factory=TokenizerSection, description="How text becomes ids."
    )
    data: DataSection = Field(default_factory=DataSection, description="What to train on.")
    training: TrainingSection = Field(
        default_factory=TrainingSection, description="Trainer settings."
    )
    distributed: DistributedSection = Field(
        default_factory=DistributedSection, description="How ranks share the work."
    )
    checkpointing: CheckpointingSection = Field(
        default_factory=CheckpointingSection, description="What is saved and kept."
    )
    resources: ResourcesSection = Field(
        default_factory=ResourcesSection, description="What a scheduler allocates."
    )
    tracking: TrackingSection = Field(
        default_factory=TrackingSection, description="Where W&B and MLflow put the run."
    )
    smoke: SmokeSection = Field(
        default_factory=SmokeSection, description="How `--smoke` shrinks the run."
    )
    secrets: list[str] = Field(
        default_factory=list,
        description="Environment variables that hold secrets (`HF_TOKEN`, `WANDB_API_KEY` always "
        "do): they reach the ranks through the environment only and are never written.",
    )

    @field_validator("name")
    @classmethod
    def name_is_one_folder(cls, value: str) -> str:
        # The name becomes runs/NAME: it must not climb out of the runs directory.
        if not RUN_NAME.fullmatch(value) or value in {".", ".."}:
            raise ValueError(
                f"{value!r} is not a plain folder name: use letters, digits, '.', '_' and '-' "
                "(no '/', no '..')"
            )
        return value

    @field_validator("secrets")
    @classmethod
    def secrets_are_variable_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not an environment variable name (letters, digits, '_')"
                )
        return value


SPLIT_SLICE = re.compile(r"^(?P<name>[^\[]+)(\[.*\])?$")


def file_paths(files: dict[str, str | list[str]]) -> list[str]:
    """Every path of ``data.files``, split by split (a split holds one path or a list)."""
    return [f for value in files.values() for f in ([value] if isinstance(value, str) else value)]


def split_name(split: str) -> str:
    """``train[:1000]`` -> ``train``: the split a slice is taken from."""
    match = SPLIT_SLICE.match(split.strip())
    return match.group("name") if match else split
