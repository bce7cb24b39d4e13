"""Tokenizer training gives what the ``tokenizers`` library gives for the same settings and text;
loaded tokenizers get their pad and extra special tokens; mistakes name their recipe key.

The references are the ``tokenizers`` library's own implementations of each kind
(``ByteLevelBPETokenizer``, ``SentencePieceBPETokenizer``, ``BertWordPieceTokenizer``,
``SentencePieceUnigramTokenizer``) and the docs' step-by-step recipe, trained on the same text.

Two checks, because the library itself repeats only some trainings exactly:

- the untrained pipeline and the trainer's configuration are identical to the reference's, for
  every algorithm (``assert_same_setup``);
- the trained result is identical (vocabulary, merges, ids) for byte-level BPE and BPE, which the
  library trains reproducibly. Its WordPiece trainer breaks ties between equally frequent merges by
  token ids handed out in hash-map order, and its Unigram trainer sums scores in parallel, so two
  runs of the library on the same text differ in a few tokens; for those we check that ours is as
  close to the reference as the library is to itself (``assert_same_up_to_ties``).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import SHARED_DATA
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tokenizers.implementations import (
    BertWordPieceTokenizer,
    ByteLevelBPETokenizer,
    SentencePieceBPETokenizer,
    SentencePieceUnigramTokenizer,
)
from tokenizers.trainers import Trainer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from launcher.errors import LauncherError
from launcher.ranks.tokenizer import (
    build_pipeline,
    describe,
    prepare_tokenizer,
    train_tokenizer,
)
from launcher.recipe.schema import TokenizerSection, TrainedTokenizerSection

RIJ = SHARED_DATA / "rij.txt"

SENTENCE = "The Quick runner's naïve model, über-tokenized in 1999: données ça 日本!"
PAIR = ("how do tokens split?", "Into pieces, mostly.")


def make_corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic text: made-up words from syllables, some capitals, accents and punctuation."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "ri", "mun", "el", "sta", "qu", "ber", "ion", "ing", "é", "ü", "ça"]
    syllables += ["ne", "de", "tok", "en", "iz", "ed", "run", "mod", "pre", "post", "al", "日本"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(600)]
    words += ["the", "a", "of", "and", "model", "runner", "token", "data", "Quick", "1999"]
    corpus = []
    for _ in range(lines):
        sentence = " ".join(rng.choices(words, k=rng.randint(3, 16)))
        if rng.random() < 0.3:
            sentence = sentence.capitalize()
        corpus.append(sentence + rng.choice([".", "!", "?", ",", ":", "", " 42."]))
    return corpus


CORPUS = make_corpus()


def fail_if_called() -> list[str]:
    raise AssertionError("texts() must not be called for a pretrained tokenizer")


def assert_same_setup(
    settings: TrainedTokenizerSection, reference: Tokenizer, trainer: Trainer
) -> None:
    """Our untrained pipeline and trainer serialize exactly like the reference's."""
    ours, our_trainer = build_pipeline(settings)
    assert json.loads(ours.to_str()) == json.loads(reference.to_str())
    assert trainer_config(our_trainer) == trainer_config(trainer)


def trainer_config(trainer: Trainer) -> dict:
    """A trainer's settings; its initial alphabet is a set, serialized in hash order."""
    config = json.loads(trainer.__getstate__())
    settings = next(iter(config.values()))
    settings = settings.get("bpe_trainer", settings)  # WordPiece wraps a BPE trainer
    settings["initial_alphabet"] = sorted(settings["initial_alphabet"])
    return config


def assert_same_tokenizer(
    ours: PreTrainedTokenizerFast, reference: Tokenizer, texts: list[str]
) -> None:
    """Same vocabulary, same model (merges included), same pipeline, same ids and decoding."""
    assert len(ours) == reference.get_vocab_size()
    assert ours.get_vocab() == reference.get_vocab()
    mine, theirs = json.loads(ours.backend_tokenizer.to_str()), json.loads(reference.to_str())
    for part in ("model", "normalizer", "pre_tokenizer", "decoder", "added_tokens"):
        assert mine[part] == theirs[part], part
    for text in texts:
        ids = ours(text, add_special_tokens=False).input_ids
        assert ids == reference.encode(text, add_special_tokens=False).ids, text
        assert ours.decode(ids, skip_special_tokens=True) == reference.decode(ids)


def assert_same_up_to_ties(
    ours: PreTrainedTokenizerFast, reference: Tokenizer, texts: list[str], specials: list[str]
) -> None:
    """Same size, pipeline and special-token ids; tokens and tokenizations agree but for ties.

    Two runs of the library itself share over 99% of their tokens and tokenize over 98% of these
    lines alike (measured over 60 runs); a vocabulary of 390 instead of 400 already drops the lines
    to 88%. The thresholds leave room for the first and catch the second.
    """
    assert len(ours) == reference.get_vocab_size()
    mine, theirs = json.loads(ours.backend_tokenizer.to_str()), json.loads(reference.to_str())
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        assert mine[part] == theirs[part], part
    assert mine["model"]["type"] == theirs["model"]["type"]
    assert ours.convert_tokens_to_ids(specials) == [reference.token_to_id(t) for t in specials]
    shared = set(ours.get_vocab()) & set(reference.get_vocab())
    assert len(shared) >= 0.98 * reference.get_vocab_size()
    same = sum(
        ours.tokenize(text) == reference.encode(text, add_special_tokens=False).tokens
        for text in texts
    )
    assert same >= 0.95 * len(texts)


def test_byte_level_bpe_matches_tokenizers_library() -> None:
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    settings = TrainedTokenizerSection(
        algorithm="byte_level_bpe",
        vocab_size=700,
        min_frequency=2,
        special_tokens=specials,
        lowercase=True,
        add_prefix_space=True,
    )
    reference = ByteLevelBPETokenizer(add_prefix_space=True, lowercase=True)
    # What ByteLevelBPETokenizer.train_from_iterator builds.
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    assert_same_setup(settings, reference._tokenizer, trainer)

    # A generator, not a list: training must not need the length up front.
    ours = train_tokenizer(settings, (line for line in CORPUS), model_max_length=128)
    reference.train_from_iterator(
        CORPUS, vocab_size=700, min_frequency=2, special_tokens=specials, show_progress=False
    )
    assert_same_tokenizer(ours, reference._tokenizer, [SENTENCE, *CORPUS[:50]])
    assert len(ours) == 700
    assert (ours.bos_token, ours.pad_token, ours.eos_token) == ("<s>", "<pad>", "</s>")
    assert (ours.unk_token, ours.mask_token) == ("<unk>", "<mask>")
    assert ours.model_max_length == 128
    # Byte-level: text it never saw round-trips (lowercased, after the added prefix space).
    assert ours.decode(ours("Zebra 🦓 ŷ").input_ids) == " zebra 🦓 ŷ"


def test_byte_level_bpe_matches_the_docs_recipe_built_by_hand() -> None:
    """The same pipeline assembled step by step, as the ``tokenizers`` docs do it."""
    specials = ["<|endoftext|>"]
    settings = TrainedTokenizerSection(
        algorithm="byte_level_bpe", vocab_size=600, min_frequency=2, special_tokens=specials
    )
    ours = train_tokenizer(settings, CORPUS)

    reference = Tokenizer(models.BPE())
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    reference.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    reference.train_from_iterator(CORPUS, trainer=trainer)
    assert_same_tokenizer(ours, reference, [SENTENCE, *CORPUS[:50]])
    assert ours.eos_token == "<|endoftext|>"


def test_bpe_matches_tokenizers_library() -> None:
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    settings = TrainedTokenizerSection(
        algorithm="bpe",
        vocab_size=500,
        min_frequency=2,
        special_tokens=specials,
        limit_alphabet=1000,
    )
    reference = SentencePieceBPETokenizer(unk_token="<unk>")
    # What SentencePieceBPETokenizer.train_from_iterator builds.
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        min_frequency=2,
        special_tokens=specials,
        limit_alphabet=1000,
        show_progress=False,
    )
    assert_same_setup(settings, reference._tokenizer, trainer)

    ours = train_tokenizer(settings, CORPUS)
    reference.train_from_iterator(
        CORPUS,
        vocab_size=500,
        min_frequency=2,
        special_tokens=specials,
        limit_alphabet=1000,
        show_progress=False,
    )
    assert_same_tokenizer(ours, reference._tokenizer, [SENTENCE, *CORPUS[:50]])
    assert len(ours) == 500
    assert ours.unk_token == "<unk>" and ours.pad_token == "<pad>"
    # Metaspace keeps the spaces, so text made of known characters decodes to itself.
    assert ours.decode(ours("the model, a token.").input_ids) == "the model, a token."


def test_bpe_limit_alphabet_keeps_that_many_characters() -> None:
    settings = TrainedTokenizerSection(
        algorithm="bpe", vocab_size=300, special_tokens=["<unk>"], limit_alphabet=20
    )
    ours = train_tokenizer(settings, CORPUS)
    alphabet = {t for t in ours.get_vocab() if len(t) == 1}
    assert len(alphabet) == 20
    # A character of the text left out of the alphabet is unknown.
    left_out = sorted({c for line in CORPUS for c in line} - alphabet - {" "})
    assert left_out
    for character in left_out:
        assert ours(character, add_special_tokens=False).input_ids[-1] == ours.unk_token_id


def test_wordpiece_matches_tokenizers_library() -> None:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    settings = TrainedTokenizerSection(
        algorithm="wordpiece",
        vocab_size=600,
        min_frequency=2,
        special_tokens=specials,
        lowercase=True,
        limit_alphabet=60,
    )
    reference = BertWordPieceTokenizer(lowercase=True)
    # What BertWordPieceTokenizer.train_from_iterator builds.
    trainer = trainers.WordPieceTrainer(
        vocab_size=600,
        min_frequency=2,
        limit_alphabet=60,
        special_tokens=specials,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    assert_same_setup(settings, reference._tokenizer, trainer)

    ours = train_tokenizer(settings, CORPUS)
    reference.train_from_iterator(
        CORPUS,
        vocab_size=600,
        min_frequency=2,
        special_tokens=specials,
        limit_alphabet=60,
        show_progress=False,
    )
    assert_same_up_to_ties(ours, reference._tokenizer, [SENTENCE, *CORPUS], specials)
    assert len(ours) == 600
    roles = (ours.pad_token, ours.unk_token, ours.cls_token, ours.sep_token, ours.mask_token)
    assert roles == tuple(specials)

    # Our [CLS] $A [SEP] wrapping is the library's BertProcessing.
    bert = Tokenizer.from_str(ours.backend_tokenizer.to_str())
    cls, sep = ours.cls_token_id, ours.sep_token_id
    bert.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    single = ours(SENTENCE)
    assert single.input_ids == bert.encode(SENTENCE).ids
    assert single.input_ids[0] == cls and single.input_ids[-1] == sep
    # Not returned unless asked: DistilBERT, one of our architectures, takes no token types.
    assert "token_type_ids" not in single
    pair = ours(*PAIR, return_token_type_ids=True)
    assert pair.input_ids == bert.encode(*PAIR).ids
    assert pair.token_type_ids == bert.encode(*PAIR).type_ids


def test_unigram_matches_tokenizers_library() -> None:
    specials = ["<unk>", "<pad>", "<s>", "</s>"]
    settings = TrainedTokenizerSection(algorithm="unigram", vocab_size=400, special_tokens=specials)
    reference = SentencePieceUnigramTokenizer()
    # What SentencePieceUnigramTokenizer.train_from_iterator builds.
    trainer = trainers.UnigramTrainer(
        vocab_size=400, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    assert_same_setup(settings, reference._tokenizer, trainer)

    ours = train_tokenizer(settings, CORPUS)
    reference.train_from_iterator(
        CORPUS, vocab_size=400, special_tokens=specials, unk_token="<unk>", show_progress=False
    )
    assert_same_up_to_ties(ours, reference._tokenizer, [SENTENCE, *CORPUS], specials)
    assert ours.unk_token == "<unk>" and ours.eos_token == "</s>"
    assert ours.decode(ours("the model, a token.").input_ids) == "the model, a token."


@pytest.mark.skipif(not RIJ.is_file(), reason=f"no shared corpus at {RIJ}")
def test_wordpiece_on_romeo_and_juliet_matches_tokenizers_library() -> None:
    lines = RIJ.read_text(encoding="utf-8").splitlines()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    settings = TrainedTokenizerSection(
        algorithm="wordpiece",
        vocab_size=2000,
        min_frequency=2,
        limit_alphabet=1000,
        lowercase=True,
        special_tokens=specials,
    )
    reference = BertWordPieceTokenizer(lowercase=True)
    trainer = trainers.WordPieceTrainer(
        vocab_size=2000,
        min_frequency=2,
        limit_alphabet=1000,
        special_tokens=specials,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    assert_same_setup(settings, reference._tokenizer, trainer)

    ours = train_tokenizer(settings, lines)
    reference.train_from_iterator(
        lines,
        vocab_size=2000,
        min_frequency=2,
        limit_alphabet=1000,
        special_tokens=specials,
        show_progress=False,
    )
    assert_same_up_to_ties(ours, reference._tokenizer, lines, specials)
    assert len(ours) == 2000
    assert ours.tokenize("Wherefore art thou Romeo?") == ["wherefore", "art", "thou", "romeo", "?"]


@pytest.mark.parametrize(
    ("algorithm", "specials"),
    [
        ("byte_level_bpe", ["<s>", "<pad>", "</s>"]),
        ("bpe", ["<unk>", "<pad>"]),
        ("wordpiece", ["[UNK]", "[PAD]", "[CLS]", "[SEP]"]),
        ("unigram", ["<unk>", "<pad>"]),
    ],
)
def test_trained_tokenizer_survives_save_and_load(
    tmp_path: Path, algorithm: str, specials: list[str]
) -> None:
    settings = TrainedTokenizerSection(algorithm=algorithm, vocab_size=300, special_tokens=specials)
    section = TokenizerSection(train=settings, special_tokens=["<|im_start|>"])
    ours = prepare_tokenizer(
        section, model_pretrained=None, texts=lambda: CORPUS, model_max_length=64
    )
    assert ours.pad_token == specials[1]
    ours.save_pretrained(tmp_path)

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = f"<|im_start|>{SENTENCE}"
    assert loaded(text).input_ids == ours(text).input_ids
    assert loaded.get_vocab() == ours.get_vocab()
    assert loaded.all_special_tokens == ours.all_special_tokens
    assert loaded.pad_token == specials[1]
    assert loaded.model_max_length == 64


def save_byte_level_bpe(folder: Path) -> Path:
    """A byte-level BPE tokenizer with an eos token and no pad token, as many LMs ship, saved."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def local_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A space in the path, on purpose.
    return save_byte_level_bpe(tmp_path_factory.mktemp("local tokenizer"))


def test_pretrained_pad_from_eos_and_extra_special_token(local_tokenizer: Path) -> None:
    base = AutoTokenizer.from_pretrained(local_tokenizer)
    assert base.pad_token is None
    section = TokenizerSection(
        pretrained=str(local_tokenizer), pad_token="eos", special_tokens=["<|im_start|>", "</s>"]
    )
    tokenizer = prepare_tokenizer(section, model_pretrained=None, texts=fail_if_called)

    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    # Only the new token is added: '</s>' is already there.
    assert len(tokenizer) == len(base) + 1
    assert "<|im_start|>" in tokenizer.all_special_tokens
    new_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert new_id == len(base)
    ids = tokenizer("say<|im_start|>hello <|im_start|> x", add_special_tokens=False).input_ids
    assert ids.count(new_id) == 2
    assert tokenizer.decode(ids) == "say<|im_start|>hello <|im_start|> x"


def test_prepared_pretrained_tokenizer_survives_save_and_load(
    local_tokenizer: Path, tmp_path: Path
) -> None:
    section = TokenizerSection(
        pretrained=str(local_tokenizer), pad_token="eos", special_tokens=["<|im_start|>"]
    )
    tokenizer = prepare_tokenizer(section, model_pretrained=None, texts=fail_if_called)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = f"<|im_start|>{SENTENCE}</s>"
    assert loaded(text).input_ids == tokenizer(text).input_ids
    assert (loaded.pad_token, loaded.eos_token) == ("</s>", "</s>")
    assert "<|im_start|>" in loaded.all_special_tokens


def test_pretrained_literal_pad_token_is_added(local_tokenizer: Path) -> None:
    base_size = len(AutoTokenizer.from_pretrained(local_tokenizer))
    section = TokenizerSection(pretrained=str(local_tokenizer), pad_token="<pad>")
    tokenizer = prepare_tokenizer(
        section, model_pretrained=None, texts=fail_if_called, model_max_length=256
    )
    assert len(tokenizer) == base_size + 1
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.pad_token_id == base_size
    assert tokenizer("a<pad>", add_special_tokens=False).input_ids[-1] == base_size
    assert tokenizer.model_max_length == 256
    batch = tokenizer(["a b c d", "a"], padding=True)
    assert batch.input_ids[1][-1] == base_size
    assert "pad '<pad>'" in describe(tokenizer)


def test_tokenizer_defaults_to_the_model_and_keeps_no_pad(local_tokenizer: Path) -> None:
    tokenizer = prepare_tokenizer(
        TokenizerSection(), model_pretrained=str(local_tokenizer), texts=fail_if_called
    )
    assert tokenizer.eos_token == "</s>"
    # No pad token asked for: the caller decides what that means for its task.
    assert tokenizer.pad_token is None
    line = describe(tokenizer)
    assert line.startswith(type(tokenizer).__name__)
    assert f"vocab {len(tokenizer)}" in line and "pad none" in line and "</s>" in line
    assert "\n" not in line


def test_retrain_keeps_the_base_pipeline(local_tokenizer: Path) -> None:
    other_text = [line.upper() for line in make_corpus(lines=300, seed=1)]
    section = TokenizerSection(
        pretrained=str(local_tokenizer),
        train=TrainedTokenizerSection(
            algorithm="retrain", vocab_size=500, min_frequency=2, special_tokens=["<pad>"]
        ),
    )
    tokenizer = prepare_tokenizer(section, model_pretrained=None, texts=lambda: other_text)
    base = AutoTokenizer.from_pretrained(local_tokenizer)

    assert len(tokenizer) == 500
    assert type(tokenizer) is type(base)
    new, old = tokenizer.backend_tokenizer, base.backend_tokenizer
    assert type(new.pre_tokenizer) is type(old.pre_tokenizer) is pre_tokenizers.ByteLevel
    assert type(new.model) is models.BPE
    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token == "<pad>"
    # Retrained on upper-case text: its merges are upper case now.
    assert "ĠPOST" in tokenizer.get_vocab() and "ĠPOST" not in base.get_vocab()
    sample = other_text[0]
    assert len(tokenizer(sample).input_ids) < len(base(sample).input_ids)


@pytest.mark.parametrize("algorithm", ["wordpiece", "retrain"])
def test_stage_ends_with_a_summary_of_what_it_trained_on_and_where(
    algorithm: str,
    local_tokenizer: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from launcher.ranks.tokenizer_stage import build_tokenizer, save_tokenizer
    from launcher.recipe.schema import Recipe

    # A cache of its own: another test training the same tokenizer first would make this a hit.
    monkeypatch.setenv("LAUNCHER_CACHE", str(tmp_path / "cache"))
    from launcher.units import format_bytes

    train = {"algorithm": algorithm, "vocab_size": 300, "special_tokens": ["[UNK]", "[PAD]"]}
    tokenizer_section: dict = {"train": train}
    if algorithm == "retrain":
        tokenizer_section["pretrained"] = str(local_tokenizer)
        train["special_tokens"] = ["<pad>"]
    recipe = Recipe.model_validate(
        {"name": "t", "task": "mlm", "tokenizer": tokenizer_section, "data": {"text_column": "t"}}
    )
    # Empty texts are left out of training, and out of the count.
    tokenizer = build_tokenizer(recipe, {"train": {"t": [*CORPUS[:200], "", *CORPUS[200:]]}})
    folder = tmp_path / "tok"
    save_tokenizer(tokenizer, folder)

    line = capsys.readouterr().out.strip().splitlines()[-1]
    size = format_bytes(sum(len(text.encode("utf-8")) for text in CORPUS))
    kind = f"{local_tokenizer} retrained" if algorithm == "retrain" else "wordpiece"
    assert re.fullmatch(
        rf"tokenizer: {re.escape(kind)}, {len(tokenizer)} tokens, trained on {re.escape(size)} "
        rf"\({len(CORPUS)} texts\) in [\d.]+ m?s -> {re.escape(str(folder))}",
        line,
    ), line
    assert AutoTokenizer.from_pretrained(folder).get_vocab() == tokenizer.get_vocab()


def test_stage_summary_of_a_loaded_tokenizer_names_its_source(
    local_tokenizer: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from launcher.ranks.tokenizer_stage import build_tokenizer, save_tokenizer
    from launcher.recipe.schema import Recipe

    recipe = Recipe.model_validate(
        {"name": "t", "task": "mlm", "tokenizer": {"pretrained": str(local_tokenizer)}}
    )
    tokenizer = build_tokenizer(recipe, None)
    save_tokenizer(tokenizer, tmp_path / "tok")
    assert capsys.readouterr().out.strip() == (
        f"tokenizer: loaded from {local_tokenizer}, {len(tokenizer)} tokens -> {tmp_path / 'tok'}"
    )


def test_pad_alias_without_that_token_names_the_key() -> None:
    section = TokenizerSection(
        pad_token="eos",
        train=TrainedTokenizerSection(
            algorithm="wordpiece", vocab_size=200, special_tokens=["[UNK]", "[CLS]", "[SEP]"]
        ),
    )
    with pytest.raises(LauncherError, match=r"tokenizer\.pad_token: 'eos' but .* no eos token"):
        prepare_tokenizer(section, model_pretrained=None, texts=lambda: CORPUS)


def test_missing_folder_names_the_key_and_value(tmp_path: Path) -> None:
    missing = tmp_path / "no such tokenizer"
    section = TokenizerSection(pretrained=str(missing))
    with pytest.raises(LauncherError) as caught:
        prepare_tokenizer(section, model_pretrained=None, texts=fail_if_called)
    message = str(caught.value)
    assert message.startswith("tokenizer.pretrained:")
    assert str(missing) in message and "local folder" in message


def test_missing_model_folder_names_model_pretrained(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing")
    with pytest.raises(LauncherError, match=r"^model\.pretrained .*local folder"):
        prepare_tokenizer(TokenizerSection(), model_pretrained=missing, texts=fail_if_called)


def test_unreachable_hub_says_offline_runs_need_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``from_pretrained`` raises for a hub id when the hub cannot be reached."""

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", offline)
    section = TokenizerSection(pretrained="some-org/some-model")
    with pytest.raises(LauncherError) as caught:
        prepare_tokenizer(section, model_pretrained=None, texts=fail_if_called)
    message = str(caught.value)
    assert message.startswith("tokenizer.pretrained: cannot load tokenizer 'some-org/some-model'")
    assert "offline runs need a local folder (or --smoke)" in message


def test_folder_without_a_tokenizer_is_explained(tmp_path: Path) -> None:
    with pytest.raises(LauncherError, match=r"^tokenizer\.pretrained: cannot load tokenizer"):
        prepare_tokenizer(
            TokenizerSection(pretrained=str(tmp_path)), model_pretrained=None, texts=fail_if_called
        )


@pytest.mark.parametrize(
    ("section", "match"),
    [
        (TokenizerSection(), r"^tokenizer: set `pretrained` \(hub id or folder\) or `train`"),
        (
            TokenizerSection(train=TrainedTokenizerSection(algorithm="retrain")),
            r"^tokenizer\.train\.algorithm: 'retrain' needs `tokenizer\.pretrained`",
        ),
        (
            TokenizerSection(
                train=TrainedTokenizerSection(algorithm="wordpiece", special_tokens=["[PAD]"])
            ),
            r"^tokenizer\.train\.special_tokens: wordpiece needs an unknown token",
        ),
        (
            TokenizerSection(
                pretrained="/nowhere",
                train=TrainedTokenizerSection(algorithm="retrain", lowercase=True),
            ),
            r"^tokenizer\.train\.lowercase: 'retrain' keeps the pretrained tokenizer's pipeline",
        ),
    ],
)
def test_recipe_mistakes_name_their_key(section: TokenizerSection, match: str) -> None:
    with pytest.raises(LauncherError, match=match):
        prepare_tokenizer(section, model_pretrained=None, texts=lambda: CORPUS)
