"""Tokenizers built stage by stage from a recipe are the ones the documented code builds; the
char-level BPE preset is ``CharBPETokenizer``; ``retrain`` uses the library's defaults; the saved
folder loads in every library; the same recipe and text give the same tokenizer (the cache).

The reference is always the ``tokenizers`` library itself, run here on the same text or files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, cli
from test_tokenizer import (
    CORPUS,
    SENTENCE,
    assert_same_setup,
    assert_same_up_to_ties,
    make_corpus,
    save_byte_level_bpe,
)
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers.implementations import ByteLevelBPETokenizer, CharBPETokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from launcher.ranks.tokenizer import prepare_tokenizer, train_tokenizer
from launcher.ranks.tokenizer_stage import build_tokenizer, save_tokenizer
from launcher.recipe.schema import Recipe, TokenizerSection, TrainedTokenizerSection

RIJ = SHARED_DATA / "rij.txt"

# The documented byte-level BPE, as a recipe writes it.
BYTE_LEVEL_PIPELINE = {
    "pre_tokenizer": [{"type": "ByteLevel", "add_prefix_space": True}],
    "model": {"type": "BPE"},
    "post_processor": [{"type": "ByteLevel", "trim_offsets": True}],
    "decoder": [{"type": "ByteLevel"}],
}


def documented_byte_level_bpe(path: Path, vocab_size: int, min_frequency: int) -> Tokenizer:
    """The docs' byte-level BPE built by hand and trained with ``Tokenizer.train([path])``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False
    )
    tokenizer.train([str(path)], trainer)
    return tokenizer


def recipe_for(path: Path, train: dict, **data: object) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "t",
            "task": "sft",
            "model": {"architecture": "mistral"},
            "tokenizer": {"train": train},
            "data": {"files": {"train": str(path)}, "shuffle": False, **data},
        }
    )


def assert_identical(ours: PreTrainedTokenizerFast, reference: Tokenizer, texts: list[str]) -> None:
    """Same vocabulary size, same serialized tokenizer, same ids for the same text."""
    assert len(ours) == reference.get_vocab_size()
    assert json.loads(ours.backend_tokenizer.to_str()) == json.loads(reference.to_str())
    for text in texts:
        assert ours(text).input_ids == reference.encode(text).ids, text


def written_corpus(folder: Path) -> Path:
    """A small text file with Windows line ends, empty lines and accents: what makes training
    on rows and training on the file differ."""
    path = folder / "corpus.txt"
    lines = make_corpus(lines=300, seed=3)
    lines[10:10] = ["", "  "]
    path.write_bytes("\r\n".join(lines).encode("utf-8") + b"\r\n")
    return path


@pytest.mark.parametrize("source", ["generated", "rij"])
def test_documented_byte_level_bpe_from_the_recipe_is_the_same_tokenizer(
    source: str, tmp_path: Path
) -> None:
    if source == "rij" and not RIJ.is_file():
        pytest.skip(f"no shared corpus at {RIJ}")
    path = RIJ if source == "rij" else written_corpus(tmp_path)
    vocab_size, min_frequency = (20000, 3) if source == "rij" else (800, 3)
    reference = documented_byte_level_bpe(path, vocab_size, min_frequency)

    train = {"vocab_size": vocab_size, "min_frequency": min_frequency}
    recipe = recipe_for(path, {**train, "pipeline": BYTE_LEVEL_PIPELINE})
    assert recipe.tokenizer.train is not None and recipe.tokenizer.train.algorithm == "pipeline"
    ours = build_tokenizer(recipe, None)

    lines = path.read_text(encoding="utf-8").splitlines()
    assert_identical(ours, reference, [SENTENCE, "Wherefore art thou Romeo?", *lines[:200]])
    # Saved by the stage, it loads back as the same tokenizer in every library.
    folder = tmp_path / "saved"
    save_tokenizer(ours, folder)
    assert Tokenizer.from_file(str(folder / "tokenizer.json")).to_str() == reference.to_str()
    bytelevel = ByteLevelBPETokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), add_prefix_space=True
    )
    loaded = AutoTokenizer.from_pretrained(folder)
    for text in [SENTENCE, *lines[:50]]:
        ids = reference.encode(text).ids
        assert bytelevel.encode(text).ids == ids
        assert loaded(text).input_ids == ids


def test_lines_without_their_ends_give_another_vocabulary(tmp_path: Path) -> None:
    """Why a pipeline trains on the files themselves: the rows lose their line ends."""
    path = written_corpus(tmp_path)
    reference = documented_byte_level_bpe(path, 800, 3)
    settings = TrainedTokenizerSection(
        vocab_size=800, min_frequency=3, pipeline=BYTE_LEVEL_PIPELINE
    )
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    from_rows = train_tokenizer(settings, rows)
    assert from_rows.get_vocab() != reference.get_vocab()
    # A selection of rows (here a slice) is trained on those rows, not on the whole file.
    recipe = recipe_for(path, {**settings.model_dump(), "pipeline": BYTE_LEVEL_PIPELINE})
    recipe.data.train_split = "train[:100]"
    assert build_tokenizer(recipe, None).get_vocab() != reference.get_vocab()


def test_wordpiece_pipeline_with_normalizers_template_and_decoder() -> None:
    """A BERT-like pipeline from the quick tour, stage by stage, against the same code."""
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    settings = TrainedTokenizerSection(
        vocab_size=500,
        special_tokens=specials,
        pipeline={
            "normalizer": [{"type": "NFD"}, {"type": "Lowercase"}, {"type": "StripAccents"}],
            "pre_tokenizer": [
                {"type": "Whitespace"},
                {"type": "Digits", "individual_digits": True},
            ],
            "model": {"type": "WordPiece", "unk_token": "[UNK]"},
            "post_processor": [
                {
                    "type": "TemplateProcessing",
                    "single": "[CLS] $A [SEP]",
                    "pair": "[CLS] $A [SEP] $B:1 [SEP]:1",
                }
            ],
            "decoder": [{"type": "WordPiece", "prefix": "##"}],
        },
    )
    ours = train_tokenizer(settings, CORPUS)

    reference = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    reference.normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    reference.decoder = decoders.WordPiece(prefix="##")
    theirs = json.loads(reference.to_str())
    mine = json.loads(ours.backend_tokenizer.to_str())
    for part in ("normalizer", "pre_tokenizer", "decoder"):
        assert mine[part] == theirs[part], part
    assert mine["model"]["type"] == "WordPiece" and len(ours) == 500
    cls, sep = ours.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    assert mine["post_processor"]["type"] == "TemplateProcessing"
    encoded = ours("a model", "the data").input_ids
    assert encoded[0] == cls and encoded.count(sep) == 2


def test_char_bpe_preset_is_the_librarys_char_bpe_tokenizer() -> None:
    """Same pipeline and trainer as ``CharBPETokenizer``; trained, the same up to ties (BPE
    with an end-of-word suffix numbers equally frequent tokens in hash order, run to run)."""
    specials = ["<unk>", "<pad>"]
    settings = TrainedTokenizerSection(
        algorithm="char_bpe", vocab_size=600, special_tokens=specials
    )
    reference = CharBPETokenizer()
    # What CharBPETokenizer.train_from_iterator builds, with its defaults.
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=2,
        special_tokens=specials,
        limit_alphabet=1000,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    assert_same_setup(settings, reference._tokenizer, trainer)

    ours = train_tokenizer(settings, CORPUS)
    reference.train_from_iterator(
        CORPUS, vocab_size=600, special_tokens=specials, show_progress=False
    )
    assert_same_up_to_ties(ours, reference._tokenizer, [SENTENCE, *CORPUS], specials)
    assert set(ours.get_vocab()) == set(reference.get_vocab())
    assert ours.decode(ours("the model runner").input_ids) == "the model runner"


def test_retrain_uses_the_librarys_min_frequency_unless_set(tmp_path: Path) -> None:
    """``train_new_from_iterator`` alone (min_frequency 0) is what an unset one gives."""
    base = save_byte_level_bpe(tmp_path / "base")
    text = make_corpus(lines=60, seed=5)  # little text: many pairs are seen once

    def retrained(min_frequency: int | None) -> PreTrainedTokenizerFast:
        train = TrainedTokenizerSection(
            algorithm="retrain", vocab_size=2000, min_frequency=min_frequency
        )
        section = TokenizerSection(pretrained=str(base), train=train)
        return prepare_tokenizer(section, model_pretrained=None, texts=lambda: text)

    library = AutoTokenizer.from_pretrained(base).train_new_from_iterator(text, 2000)
    assert retrained(None).get_vocab() == library.get_vocab()
    assert len(retrained(2)) < len(retrained(None))


def test_presets_keep_min_frequency_two_when_unset() -> None:
    unset = TrainedTokenizerSection(algorithm="bpe", vocab_size=2000, special_tokens=["<unk>"])
    two = TrainedTokenizerSection(
        algorithm="bpe", vocab_size=2000, min_frequency=2, special_tokens=["<unk>"]
    )
    assert train_tokenizer(unset, CORPUS).get_vocab() == train_tokenizer(two, CORPUS).get_vocab()


def test_saved_wordpiece_folder_has_vocab_txt(tmp_path: Path) -> None:
    settings = TrainedTokenizerSection(
        algorithm="wordpiece", vocab_size=300, special_tokens=["[UNK]", "[PAD]"]
    )
    recipe = Recipe.model_validate(
        {"name": "t", "task": "mlm", "tokenizer": {"train": settings.model_dump()}}
    )
    tokenizer = build_tokenizer(recipe, {"train": {"text": CORPUS}})
    save_tokenizer(tokenizer, tmp_path / "tok")
    vocab = (tmp_path / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab == [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda x: x[1])]
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").get_vocab() == tokenizer.get_vocab()


# --- the cache: the same recipe on the same text gives the same tokenizer ----------------------


def wordpiece_recipe(path: Path, **train: object) -> Recipe:
    settings = {
        "algorithm": "wordpiece",
        "vocab_size": 700,
        "lowercase": True,
        "special_tokens": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        **train,
    }
    return Recipe.model_validate(
        {
            "name": "t",
            "task": "mlm",
            "model": {"architecture": "distilbert"},
            "tokenizer": {"train": settings},
            "data": {"files": {"train": str(path)}, "format": "text", "shuffle": False},
        }
    )


def saved_json(recipe: Recipe, folder: Path) -> tuple[str, str]:
    """tokenizer.json of the stage's saved tokenizer, and the stage's summary line."""
    tokenizer = build_tokenizer(recipe, None)
    save_tokenizer(tokenizer, folder)
    return (folder / "tokenizer.json").read_text(), str(folder)


def test_same_recipe_and_text_give_the_same_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAUNCHER_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(make_corpus(lines=500, seed=7)) + "\n", encoding="utf-8")

    first, _ = saved_json(wordpiece_recipe(path), tmp_path / "a")
    assert "trained on" in capsys.readouterr().out
    second, _ = saved_json(wordpiece_recipe(path), tmp_path / "b")
    assert "from the tokenizer cache" in capsys.readouterr().out
    assert first == second
    cached = list((tmp_path / "cache" / "tokenizers").iterdir())
    assert len(cached) == 1 and (cached[0] / "key.json").is_file()

    # A changed option or a changed text is another tokenizer: trained, not loaded.
    saved_json(wordpiece_recipe(path, vocab_size=650), tmp_path / "c")
    assert "trained on" in capsys.readouterr().out
    path.write_text("\n".join(make_corpus(lines=500, seed=8)) + "\n", encoding="utf-8")
    saved_json(wordpiece_recipe(path), tmp_path / "d")
    assert "trained on" in capsys.readouterr().out
    assert len(list((tmp_path / "cache" / "tokenizers").iterdir())) == 3


def test_a_pipeline_on_files_is_cached_by_their_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAUNCHER_CACHE", str(tmp_path / "cache"))
    path = written_corpus(tmp_path)
    recipe = recipe_for(path, {"vocab_size": 500, "pipeline": BYTE_LEVEL_PIPELINE})
    first, _ = saved_json(recipe, tmp_path / "a")
    copy = tmp_path / "elsewhere.txt"
    copy.write_bytes(path.read_bytes())  # the same text in another place still hits
    capsys.readouterr()
    second, _ = saved_json(recipe_for(copy, recipe.tokenizer.train.model_dump()), tmp_path / "b")
    assert "from the tokenizer cache" in capsys.readouterr().out
    assert first == second


def test_a_damaged_cached_copy_is_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAUNCHER_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    saved_json(wordpiece_recipe(path), tmp_path / "a")
    (cached,) = (tmp_path / "cache" / "tokenizers").iterdir()
    (cached / "tokenizer.json").write_text("not json")
    capsys.readouterr()
    saved_json(wordpiece_recipe(path), tmp_path / "b")
    assert "trained on" in capsys.readouterr().out


# --- launcher tokenizer with a tokenizer-only recipe --------------------------------------------


def tokenizer_only(folder: Path, corpus: Path, **extra: object) -> Path:
    import yaml

    recipe = {
        "name": "rij-bpe",
        "tokenizer": {
            "train": {"vocab_size": 800, "min_frequency": 3, "pipeline": BYTE_LEVEL_PIPELINE}
        },
        "data": {"files": {"train": str(corpus)}},
        **extra,
    }
    path = folder / "tokenizer.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_launcher_tokenizer_builds_a_tokenizer_only_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHER_CACHE", str(tmp_path / "cache"))
    corpus = written_corpus(tmp_path)
    recipe = tokenizer_only(tmp_path, corpus)
    out = tmp_path / "out"
    code, stdout, stderr = cli("tokenizer", str(recipe), "-o", str(out), "--sample", "the model")
    assert code == 0, stderr
    reference = documented_byte_level_bpe(corpus, 800, 3)
    assert f"vocabulary size: {reference.get_vocab_size()}" in stdout
    encoding = reference.encode("the model")
    assert f"tokens: {encoding.tokens}" in stdout and f"ids: {encoding.ids}" in stdout
    assert {"tokenizer.json", "vocab.json", "merges.txt"} <= {p.name for p in out.iterdir()}
    assert Tokenizer.from_file(str(out / "tokenizer.json")).to_str() == reference.to_str()


def test_tokenizer_only_recipe_mistakes_name_file_and_key(tmp_path: Path) -> None:
    corpus = written_corpus(tmp_path)
    recipe = tokenizer_only(tmp_path, corpus, training={"learning_rate": 1e-4})
    code, _, err = cli("tokenizer", str(recipe), "-o", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err
    assert "tokenizer.yaml: training: unknown key" in err

    recipe = tokenizer_only(tmp_path, tmp_path / "missing.txt")
    code, _, err = cli("tokenizer", str(recipe), "-o", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err
    assert "tokenizer.yaml: data.files.train: " in err and "missing.txt: no such file" in err

    code, _, err = cli(
        "tokenizer",
        str(recipe),
        "-o",
        str(tmp_path / "out"),
        "tokenizer.train.pipeline.model.type=BPX",
    )
    assert code == 2
    assert "command line: tokenizer.train.pipeline.model.type: 'BPX' is not one of" in err


def test_a_tokenizer_only_recipe_given_to_run_says_which_command_builds_it(
    tmp_path: Path,
) -> None:
    recipe = tokenizer_only(tmp_path, written_corpus(tmp_path))
    for command in ("run", "plan"):
        code, out, err = cli(command, str(recipe))
        assert code == 2 and "Traceback" not in err, err
        assert "tokenizer.yaml: task: required, but not set; this is a tokenizer-only recipe" in err
        assert "launcher tokenizer RECIPE -o FOLDER" in err


def test_what_only_the_library_refuses_names_the_key() -> None:
    """A regular expression is compiled by the library (Oniguruma), not at plan time."""
    from launcher.errors import LauncherError

    step = {"type": "Replace", "pattern": {"regex": "(("}, "content": " "}
    settings = TrainedTokenizerSection(
        vocab_size=300, pipeline={"model": {"type": "BPE"}, "normalizer": [step]}
    )
    with pytest.raises(
        LauncherError,
        match=r"^tokenizer\.train\.pipeline\.normalizer\.0: tokenizers refused Replace",
    ):
        train_tokenizer(settings, CORPUS)


def test_bert_processing_wraps_with_the_trained_ids() -> None:
    settings = TrainedTokenizerSection(
        vocab_size=300,
        special_tokens=["[UNK]", "[CLS]", "[SEP]"],
        pipeline={
            "model": {"type": "WordPiece"},
            "pre_tokenizer": [{"type": "BertPreTokenizer"}],
            "post_processor": [{"type": "BertProcessing", "sep": "[SEP]", "cls": "[CLS]"}],
        },
    )
    ours = train_tokenizer(settings, CORPUS)
    reference = Tokenizer.from_str(ours.backend_tokenizer.to_str())
    reference.post_processor = processors.BertProcessing(("[SEP]", 2), ("[CLS]", 1))
    assert ours("a model").input_ids == reference.encode("a model").ids
    assert ours.convert_ids_to_tokens(ours("a").input_ids)[::2] == ["[CLS]", "[SEP]"]
