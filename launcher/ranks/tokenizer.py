"""The run's tokenizer: trained on the training text, or loaded, then given its special tokens.

``prepare_tokenizer`` is what a rank (or ``launcher tokenizer``) calls with the recipe's
``tokenizer:`` section. It returns the tokenizer the model is trained with; the caller resizes the
model's embeddings to ``len(tokenizer)``.

Training builds the pipeline and trainer of the ``tokenizers`` library's own implementation of each
kind, so a trained tokenizer is what that library gives for the same settings and text (exactly so
for the BPE kinds; the library's WordPiece and Unigram trainers break ties differently run to run):

- ``byte_level_bpe`` (GPT-2, RoBERTa; ``ByteLevelBPETokenizer``): ByteLevel pre-tokenizer and
  decoder, BPE starting from all 256 bytes, so no text is ever unknown.
- ``bpe`` (``SentencePieceBPETokenizer``): NFKC, Metaspace pre-tokenizer and decoder, BPE. We use
  Metaspace rather than the quick tour's Whitespace pre-tokenizer because decoding then restores
  the spaces ("a, b" rather than "a , b"), which generation needs.
- ``char_bpe`` (the original BPE of Sennrich et al.; ``CharBPETokenizer``): BertNormalizer
  without lowercasing, BertPreTokenizer, BPE marking word ends with ``</w>``, BPEDecoder; an
  alphabet of at most 1000 characters unless ``limit_alphabet`` says otherwise.
- ``wordpiece`` (BERT; ``BertWordPieceTokenizer``): BertNormalizer, BertPreTokenizer, WordPiece
  with ``##`` continuations.
- ``unigram`` (T5, ALBERT; ``SentencePieceUnigramTokenizer``): NMT and NFKC normalization, runs of
  spaces collapsed, Metaspace pre-tokenizer and decoder, Unigram.
- ``retrain``: ``train_new_from_iterator`` on ``tokenizer.pretrained``, keeping its pipeline.
- ``pipeline``: the stages the recipe names (``tokenizer_pipeline``), and nothing else. Trained on
  local text files, it reads them as the library's ``Tokenizer.train(files)`` does (each line
  with its line end, which the byte-level pre-tokenizer keeps as a token), so the recipe of a
  documented pipeline gives exactly what that code gives on the same files.

``min_frequency`` unset is 2 for the presets (the library's implementations default to 2) and
the trainer's own default (0) for ``retrain`` and ``pipeline``.

``lowercase`` lowercases after that normalization; ``add_prefix_space`` is byte-level BPE's (the
Metaspace ones always mark the first word as a word start, as SentencePiece does). Special tokens
take the roles their names say (``[PAD]``/``<pad>`` pads, ``</s>`` ends, ...), and when both
``[CLS]`` and ``[SEP]`` are among them every sequence is wrapped as ``[CLS] $A [SEP]``.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.errors import LauncherError, first_line
from launcher.paths import is_local_path
from launcher.ranks import tokenizer_cache

# Which role each special token plays (and the `pad_token` words that reuse one): the recipe
# layer's, since the plan checks that a trained tokenizer has the roles its task needs.
from launcher.recipe.checks import PAD_ALIASES, SPECIAL_TOKEN_ROLES
from launcher.recipe.schema import TokenizerSection, TrainedTokenizerSection

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from tokenizers.processors import PostProcessor
    from tokenizers.trainers import Trainer
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast


BATCH_SIZE = 1000
# What the library's own implementations (ByteLevelBPETokenizer & co.) default to.
PRESET_MIN_FREQUENCY = 2
CHAR_BPE_LIMIT_ALPHABET = 1000  # CharBPETokenizer.train's default
CHAR_BPE_SUFFIX = "</w>"


@dataclass
class TextStats:
    """What a trainer consumed, counted on the way in: for the stage's one-line summary."""

    texts: int = 0
    bytes: int = 0  # UTF-8
    seconds: float = 0.0  # reading the texts and training
    cached: Path | None = None  # loaded from this copy in the tokenizer cache: not trained


def progress_bars() -> bool:
    """The trainers' progress bars only on a terminal: in a log they draw nothing but blank
    lines (the rank logs' stderr is not a terminal)."""
    return sys.stderr.isatty()


def train_tokenizer(
    settings: TrainedTokenizerSection,
    texts: Iterable[str],
    *,
    base: str | None = None,
    model_max_length: int | None = None,
    trust_remote_code: bool = False,
    stats: TextStats | None = None,
    files: list[str] | None = None,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on ``texts`` as ``settings`` say; ``base`` is the tokenizer to retrain.

    ``files``: local text files whose lines are exactly ``texts``; a ``pipeline`` then trains on
    them as ``Tokenizer.train(files)`` does, line ends included. ``stats``, when given, counts
    the texts and bytes the trainer read."""
    require_valid(TokenizerSection(pretrained=base, train=settings), model_pretrained=None)
    stats = stats if stats is not None else TextStats()
    if settings.algorithm == "retrain":
        return _retrain(settings, texts, base, model_max_length, trust_remote_code, stats)

    from transformers import PreTrainedTokenizerFast

    started = time.perf_counter()
    if settings.algorithm == "pipeline":
        tokenizer = _train_stages(settings, texts, files, stats)
    else:
        tokenizer, trainer = build_pipeline(settings, show_progress=progress_bars())
        batches = _batches(texts, stats=stats)
        tokenizer.train_from_iterator(batches, trainer=trainer, length=_length(texts))
    stats.seconds = time.perf_counter() - started
    roles = special_token_roles(settings.special_tokens)
    if settings.algorithm != "pipeline" and "cls_token" in roles and "sep_token" in roles:
        tokenizer.post_processor = _bert_template(tokenizer, roles["cls_token"], roles["sep_token"])

    extra = [t for t in settings.special_tokens if t not in roles.values()]
    kwargs: dict[str, object] = dict(roles)
    if extra:
        kwargs["extra_special_tokens"] = extra
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **kwargs)


def prepare_tokenizer(
    section: TokenizerSection,
    *,
    model_pretrained: str | None,
    texts: Callable[[], Iterable[str]],
    model_max_length: int | None = None,
    trust_remote_code: bool = False,
    stats: TextStats | None = None,
    files: list[str] | None = None,
    cache: Path | None = None,
) -> PreTrainedTokenizerBase:
    """The run's tokenizer: trained or loaded, then with its pad token and extra specials set.

    ``texts`` is called only when the tokenizer is trained (``stats`` then counts them);
    ``files`` are the text files those texts are the lines of, when they are (see
    :func:`train_tokenizer`). With ``cache`` (a folder), a trained tokenizer is kept there and
    reused by the next build of the same settings and text (``tokenizer_cache``). A tokenizer
    that ends up without a pad token is returned as is: whether that matters depends on the
    task, which the caller knows.
    """
    require_valid(section, model_pretrained)
    stats = stats if stats is not None else TextStats()
    if section.train is not None:
        train_settings = section.train
        # A pipeline trained on files reads them itself: the rows are not needed then.
        on_files = bool(files) and train_settings.algorithm == "pipeline"

        def train() -> PreTrainedTokenizerBase:
            return train_tokenizer(
                train_settings,
                () if on_files else texts(),
                base=section.pretrained,
                model_max_length=model_max_length,
                trust_remote_code=trust_remote_code,
                stats=stats,
                files=files,
            )

        tokenizer: PreTrainedTokenizerBase
        if cache is None:
            tokenizer = train()
        else:
            tokenizer = _trained_or_cached(
                section, texts, files, cache, train, trust_remote_code, model_max_length, stats
            )
    else:
        key, name = _pretrained_source(section, model_pretrained)
        tokenizer = load_pretrained(name, key=key, trust_remote_code=trust_remote_code)
        if model_max_length is not None:
            tokenizer.model_max_length = model_max_length
    if section.pad_token is not None:
        _set_pad_token(tokenizer, section.pad_token)
    _add_special_tokens(tokenizer, section.special_tokens)
    if section.chat_template is not None:
        from launcher.recipe.chat_template import chat_template_text

        tokenizer.chat_template = chat_template_text(section.chat_template)
    return tokenizer


def describe(tokenizer: PreTrainedTokenizerBase) -> str:
    """One line for the logs: class, vocabulary size, special tokens and the pad token."""
    specials = " ".join(tokenizer.all_special_tokens)
    pad = (
        "none"
        if tokenizer.pad_token is None
        else f"{tokenizer.pad_token!r} (id {tokenizer.pad_token_id})"
    )
    return (
        f"{type(tokenizer).__name__}: vocab {len(tokenizer)} (base {tokenizer.vocab_size}), "
        f"special tokens [{specials}], pad {pad}"
    )


def special_token_roles(special_tokens: Iterable[str]) -> dict[str, str]:
    """``{"pad_token": "[PAD]", ...}`` for the special tokens whose names say their role."""
    roles: dict[str, str] = {}
    for token in special_tokens:
        role = SPECIAL_TOKEN_ROLES.get(token)
        if role is not None:
            roles.setdefault(role, token)
    return roles


def load_pretrained(
    name: str, *, key: str = "tokenizer.pretrained", trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained(name)``; failures explained in terms of recipe ``key``."""
    from transformers import AutoTokenizer

    offline = "offline runs need a local folder (or --smoke)"
    # A path that is plainly local fails at once here; handed to the hub client it would first
    # retry the network for most of a minute.
    if is_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise LauncherError(f"{key}: {name!r} is not a folder; {offline}")
    try:
        return AutoTokenizer.from_pretrained(
            os.path.expanduser(name), trust_remote_code=trust_remote_code
        )
    except OSError as error:
        raise LauncherError(
            f"{key}: cannot load tokenizer {name!r}: not a local folder and not reachable on "
            f"the Hugging Face Hub; {offline}. ({first_line(error)})"
        ) from error
    except ValueError as error:
        if "trust_remote_code" in str(error):  # its own code, and model.trust_remote_code is off
            from launcher.ranks.model import remote_code_message

            raise LauncherError(remote_code_message(key, name)) from None
        raise LauncherError(
            f"{key}: cannot load tokenizer {name!r}: {first_line(error)}"
        ) from error


def require_valid(section: TokenizerSection, model_pretrained: str | None) -> None:
    """Refuse what the recipe checks refuse (``recipe/checks.py``, the one home of the rules),
    naming the key: the tokenizer stage can be called without a checked recipe."""
    from launcher.recipe.checks import tokenizer_problems

    for key, message in tokenizer_problems(section, model_pretrained):
        raise LauncherError(f"{key}: {message}")


def build_pipeline(
    settings: TrainedTokenizerSection, show_progress: bool = False
) -> tuple[Tokenizer, Trainer]:
    """The untrained tokenizer and its trainer for a from-scratch ``settings.algorithm``.

    Each preset is the pipeline of the ``tokenizers`` library's own implementation of that kind
    (``ByteLevelBPETokenizer``, ``SentencePieceBPETokenizer``, ``CharBPETokenizer``,
    ``BertWordPieceTokenizer``, ``SentencePieceUnigramTokenizer``), with its trainer given our
    settings; ``pipeline`` is the recipe's stages (``tokenizer_pipeline``).
    """
    algorithm = settings.algorithm
    if algorithm == "pipeline":
        from launcher.ranks.tokenizer_pipeline import build_from_stages

        return build_from_stages(settings, show_progress)
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    unk = special_token_roles(settings.special_tokens).get("unk_token")
    min_frequency = (
        PRESET_MIN_FREQUENCY if settings.min_frequency is None else settings.min_frequency
    )
    common = {
        "vocab_size": settings.vocab_size,
        "special_tokens": list(settings.special_tokens),
        "show_progress": show_progress,
    }
    limit_alphabet = settings.limit_alphabet
    if algorithm == "char_bpe" and limit_alphabet is None:
        limit_alphabet = CHAR_BPE_LIMIT_ALPHABET
    limit = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
    steps: list[normalizers.Normalizer] = []
    if algorithm == "byte_level_bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
            add_prefix_space=settings.add_prefix_space
        )
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        # Every byte starts in the vocabulary, so no text is ever unknown.
        trainer: Trainer = trainers.BpeTrainer(
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            **limit,
            **common,
        )
    elif algorithm == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=unk))
        steps.append(normalizers.NFKC())
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(min_frequency=min_frequency, **limit, **common)
    elif algorithm == "char_bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=unk, end_of_word_suffix=CHAR_BPE_SUFFIX))
        steps.append(normalizers.BertNormalizer(lowercase=False))
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.BPEDecoder(suffix=CHAR_BPE_SUFFIX)
        trainer = trainers.BpeTrainer(
            min_frequency=min_frequency, end_of_word_suffix=CHAR_BPE_SUFFIX, **limit, **common
        )
    elif algorithm == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token=unk))
        # BertNormalizer lowercases (and then strips accents) itself.
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=settings.lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(min_frequency=min_frequency, **limit, **common)
    elif algorithm == "unigram":
        tokenizer = Tokenizer(models.Unigram())
        steps += [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        # Unigram prunes a large seed vocabulary: it has no merge count or alphabet limit.
        trainer = trainers.UnigramTrainer(unk_token=unk, **common)
    else:
        raise AssertionError(f"no pipeline for algorithm {algorithm!r}")
    if settings.lowercase and algorithm != "wordpiece":
        steps.append(normalizers.Lowercase())
    if steps:
        tokenizer.normalizer = steps[0] if len(steps) == 1 else normalizers.Sequence(steps)
    return tokenizer, trainer


def _train_stages(
    settings: TrainedTokenizerSection,
    texts: Iterable[str],
    files: list[str] | None,
    stats: TextStats,
) -> Tokenizer:
    """Train the recipe's pipeline: on ``files`` as the library reads them when given, else on
    ``texts``; then its post-processor, whose special tokens now have ids."""
    from launcher.ranks.tokenizer_pipeline import add_post_processor, build_from_stages

    tokenizer, trainer = build_from_stages(settings, show_progress=progress_bars())
    if files:
        tokenizer.train(files, trainer=trainer)
        for path in files:
            with open(path, "rb") as handle:
                stats.texts += sum(1 for _ in handle)
            stats.bytes += os.path.getsize(path)
    else:
        batches = _batches(texts, stats=stats)
        tokenizer.train_from_iterator(batches, trainer=trainer, length=_length(texts))
    add_post_processor(tokenizer, settings)
    return tokenizer


def _trained_or_cached(
    section: TokenizerSection,
    texts: Callable[[], Iterable[str]],
    files: list[str] | None,
    cache: Path,
    train: Callable[[], PreTrainedTokenizerBase],
    trust_remote_code: bool,
    model_max_length: int | None,
    stats: TextStats,
) -> PreTrainedTokenizerBase:
    """The tokenizer ``train`` gives, from the cache when the same settings and text trained
    one before (``tokenizer_cache``: the library's WordPiece training is not repeatable).

    A fresh one is stored and then read back from its copy, so the first build and every later
    one return the same thing."""
    from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

    assert section.train is not None
    use_files = bool(files) and section.train.algorithm == "pipeline"
    if use_files:
        text = {"files": tokenizer_cache.files_digest(files or [])}
    else:
        text = {"texts": tokenizer_cache.text_digest(texts())}
    base = None
    if section.train.algorithm == "retrain":
        assert section.pretrained is not None
        base = _base_digest(section.pretrained, trust_remote_code)
    key, description = tokenizer_cache.cache_key(section.train, text, base)
    folder = cache / key

    def load(path: Path) -> PreTrainedTokenizerBase:
        loaded = load_pretrained(str(path), trust_remote_code=trust_remote_code)
        # Not part of the key: the cut-off length of one recipe does not shape the vocabulary.
        loaded.model_max_length = (
            VERY_LARGE_INTEGER if model_max_length is None else model_max_length
        )
        return loaded

    cached = tokenizer_cache.load_cached(folder, load)
    if cached is not None:
        stats.cached = folder
        return cached
    tokenizer_cache.store(folder, train(), description)
    return load(folder)


def _base_digest(name: str, trust_remote_code: bool) -> str:
    """What a ``retrain`` starts from, by content: its pipeline, vocabulary and special tokens."""
    import hashlib
    import json

    original = load_pretrained(name, trust_remote_code=trust_remote_code)
    backend = getattr(original, "backend_tokenizer", None)
    content = {
        "class": type(original).__name__,
        "backend": backend.to_str() if backend is not None else None,
        "special": original.special_tokens_map,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def _bert_template(tokenizer: Tokenizer, cls: str, sep: str) -> PostProcessor:
    from tokenizers import processors

    return processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[
            (cls, tokenizer.token_to_id(cls)),
            (sep, tokenizer.token_to_id(sep)),
        ],
    )


def _retrain(
    settings: TrainedTokenizerSection,
    texts: Iterable[str],
    base: str | None,
    model_max_length: int | None,
    trust_remote_code: bool,
    stats: TextStats,
) -> PreTrainedTokenizerFast:
    """``train_new_from_iterator`` on ``base``: its normalizer, pre-tokenizer and specials stay."""
    assert base is not None, "require_valid: retrain needs tokenizer.pretrained"
    original = load_pretrained(base, trust_remote_code=trust_remote_code)
    if not getattr(original, "is_fast", False):
        raise LauncherError(
            f"tokenizer.pretrained: {base!r} has no fast (tokenizers) version to retrain"
        )
    model_type = original.backend_tokenizer.model.__class__.__name__
    kwargs: dict[str, object] = {"show_progress": progress_bars()}
    # The trainers take different settings: Unigram's neither, WordLevel's no alphabet limit.
    # Unset: the trainer's own default (0), as `train_new_from_iterator` alone gives.
    if model_type in ("BPE", "WordPiece", "WordLevel") and settings.min_frequency is not None:
        kwargs["min_frequency"] = settings.min_frequency
    if model_type in ("BPE", "WordPiece") and settings.limit_alphabet is not None:
        kwargs["limit_alphabet"] = settings.limit_alphabet
    # The base's special tokens survive retraining; the rest of its vocabulary does not.
    present = set(original.all_special_tokens)
    new_special = [t for t in settings.special_tokens if t not in present]
    started = time.perf_counter()
    try:
        tokenizer = original.train_new_from_iterator(
            _batches(texts, stats=stats),
            settings.vocab_size,
            length=_length(texts),
            new_special_tokens=new_special or None,
            **kwargs,
        )
    except ValueError as error:
        raise LauncherError(
            f"tokenizer.train.algorithm: cannot retrain {base!r}: {first_line(error)}"
        ) from error
    stats.seconds = time.perf_counter() - started
    # A new token named for a role the base leaves empty (a '<pad>' for GPT-2, say) takes it.
    for role, token in special_token_roles(new_special).items():
        if getattr(tokenizer, role) is None:
            setattr(tokenizer, role, token)
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    return tokenizer


def _pretrained_source(section: TokenizerSection, model_pretrained: str | None) -> tuple[str, str]:
    """The recipe key that names the tokenizer to load, and its value."""
    if section.pretrained is not None:
        return "tokenizer.pretrained", section.pretrained
    assert model_pretrained is not None, "require_valid: a tokenizer needs a source"
    return "model.pretrained (tokenizer.pretrained is not set)", model_pretrained


def _set_pad_token(tokenizer: PreTrainedTokenizerBase, pad_token: str) -> None:
    if pad_token in PAD_ALIASES:
        existing = getattr(tokenizer, f"{pad_token}_token")
        if existing is None:
            raise LauncherError(
                f"tokenizer.pad_token: {pad_token!r} but the tokenizer has no {pad_token} token; "
                "use a literal token such as '<pad>'"
            )
        tokenizer.pad_token = existing
    elif tokenizer.pad_token != pad_token:
        tokenizer.add_special_tokens({"pad_token": pad_token})


def _add_special_tokens(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> None:
    present = set(tokenizer.all_special_tokens)
    new = [t for t in dict.fromkeys(tokens) if t not in present]
    if new:
        # Extend the tokenizer's own extra specials (a chat template's, say); don't replace them.
        tokenizer.add_special_tokens(
            {"extra_special_tokens": new}, replace_extra_special_tokens=False
        )


def _batches(
    texts: Iterable[str], size: int = BATCH_SIZE, stats: TextStats | None = None
) -> Iterator[list[str]]:
    """Lists of ``size`` texts: the trainer takes a batch per call into Rust, far faster."""
    iterator = iter(texts)
    while batch := list(itertools.islice(iterator, size)):
        if stats is not None:
            stats.texts += len(batch)
            stats.bytes += sum(len(text.encode("utf-8")) for text in batch)
        yield batch


def _length(texts: Iterable[str]) -> int | None:
    """The number of texts when known up front (it drives only the trainer's progress count)."""
    return len(texts) if isinstance(texts, Sized) else None
