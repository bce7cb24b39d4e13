"""``launcher export``: a checkpoint of a real run becomes one Hugging Face model folder.

DDP, ZeRO-2 and ZeRO-3 runs are the session's shared reference runs (shared_runs.py: 60 steps, a
checkpoint every 2, the newest 3 kept: 56, 58 and 60); the bf16 and classification runs are
trained once per module here (4 steps, checkpoints at 2 and 4). The truth an export must equal:
the DDP checkpoint's ``model.safetensors``; for DeepSpeed, the fp32 master weights DeepSpeed itself
rebuilds from the ZeRO shards.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import launcher, load_weights
from run_scenarios import STEPS

from launcher.commands.export import export
from launcher.errors import LauncherError
from launcher.export import compare_export, export_checkpoint, load_saved_model
from launcher.units import format_bytes

if TYPE_CHECKING:
    from shared_runs import SharedRuns

pytestmark = pytest.mark.integration
pytest_plugins = ["shared_runs"]

FOUR_STEPS = ["smoke.max_steps=4", "smoke.checkpoint_every=2"]
SHARED = {"ddp": "ddp-1-rank", "zero2": "zero2-2-ranks", "zero3": "zero3-2-ranks"}
RUNS = {
    "zero3-bf16": (
        "sft-mistral",
        [
            *FOUR_STEPS,
            "distributed.strategy=deepspeed",
            "distributed.zero_stage=3",
            "training.precision=bf16",
        ],
    ),
    "classification": ("classification-imdb", FOUR_STEPS),
}
LAST, BEFORE, FIRST_KEPT = STEPS, STEPS - 2, STEPS - 4  # the checkpoints a shared run keeps
SENTENCE = "The quick brown fox jumps over the lazy dog, twice."


@pytest.fixture(scope="module")
def trained(
    tmp_path_factory: pytest.TempPathFactory, shared_runs: SharedRuns
) -> Callable[[str], Path]:
    """``trained(name)``: the run directory of a shared run (``SHARED``), or of ``RUNS[name]``
    trained on first use. Read them, never change them."""
    root = tmp_path_factory.mktemp("export runs")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name in SHARED:
            return shared_runs.reference(SHARED[name])
        if name not in done:
            recipe, overrides = RUNS[name]
            run_dir = root / name
            launcher("run", recipe, "--smoke", "--run-dir", str(run_dir), *overrides, cwd=root)
            done[name] = run_dir
        return done[name]

    return get


def checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"checkpoint-{step}"


def fp32_masters(folder: Path) -> dict:
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(folder))


def max_abs_diff(got: dict, want: dict) -> float:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
    return max((got[k].double() - want[k].double()).abs().max().item() for k in want)


def last_line(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def assert_same_tokenizer(exported: Path, run_dir: Path) -> None:
    from transformers import AutoTokenizer

    ours, theirs = (
        AutoTokenizer.from_pretrained(exported),
        AutoTokenizer.from_pretrained(run_dir / "tokenizer"),
    )
    assert ours(SENTENCE)["input_ids"] == theirs(SENTENCE)["input_ids"]
    assert len(ours) == len(theirs)


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3"])
def test_newest_checkpoint_exports_the_trained_weights(
    name: str, trained: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM

    run_dir = trained(name)
    exported = export_checkpoint(run_dir, tmp_path / "exported")

    summary = last_line(capsys)
    assert summary.startswith(f"exported step {LAST} of {run_dir} (")
    assert ("DDP" if name == "ddp" else f"fp32 master weights from global_step{LAST}") in summary
    assert sorted(p.name for p in exported.iterdir()) == [
        "config.json",
        "generation_config.json",
        "merges.txt",  # the byte-level BPE model's own files, beside tokenizer.json
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    ]
    model = AutoModelForCausalLM.from_pretrained(exported)
    weights_file = exported / "model.safetensors"
    assert summary.endswith(
        f": {len(load_weights(exported))} tensors, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{format_bytes(weights_file.stat().st_size)}, each equal to the checkpoint's "
        f"-> {weights_file}"
    ), summary
    weights = model.state_dict()
    if name == "ddp":
        assert max_abs_diff(weights, load_weights(checkpoint(run_dir, LAST))) == 0.0
    else:
        assert max_abs_diff(weights, fp32_masters(checkpoint(run_dir, LAST))) == 0.0
    # An fp32 CPU run ends at its last checkpoint: the final model holds the same weights.
    assert max_abs_diff(weights, load_weights(run_dir / "model")) == 0.0
    assert_same_tokenizer(exported, run_dir)


def test_checkpoint_option_exports_that_step(
    trained: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    run_dir = trained("zero3")
    exported = export_checkpoint(run_dir, tmp_path / "older", step=BEFORE)

    assert last_line(capsys).startswith(f"exported step {BEFORE} of {run_dir} (")
    weights = load_file(str(exported / "model.safetensors"))
    assert max_abs_diff(weights, fp32_masters(checkpoint(run_dir, BEFORE))) == 0.0
    assert max_abs_diff(weights, fp32_masters(checkpoint(run_dir, LAST))) > 0.0


def test_zero3_bf16_exports_fp32_masters_not_the_16bit_file(
    trained: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    run_dir = trained("zero3-bf16")
    exported = export_checkpoint(run_dir, tmp_path / "exported")

    assert "checkpoint's own model.safetensors is BF16" in last_line(capsys)
    masters = fp32_masters(checkpoint(run_dir, 4))
    sixteen_bit = load_weights(checkpoint(run_dir, 4))  # what ZeRO-3 gathered on save
    model = AutoModelForCausalLM.from_pretrained(exported)
    assert model.dtype == torch.float32
    assert max_abs_diff(model.state_dict(), masters) == 0.0
    # The gathered file is the masters rounded to bf16: close, but not the trained weights.
    rounded = {name: tensor.to(torch.bfloat16) for name, tensor in masters.items()}
    assert max_abs_diff(sixteen_bit, rounded) == 0.0
    assert max_abs_diff({k: v.float() for k, v in sixteen_bit.items()}, masters) > 0.0


def test_classification_export_keeps_labels(trained: Callable[[str], Path], tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    run_dir = trained("classification")
    assert export(run_dir, output=tmp_path / "exported") == 0  # the command's own function

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported")
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert max_abs_diff(model.state_dict(), load_weights(checkpoint(run_dir, 4))) == 0.0
    assert_same_tokenizer(tmp_path / "exported", run_dir)


def test_refusals_name_the_folder_and_the_way_out(
    trained: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "run copy"
    shutil.copytree(trained("ddp"), copy, ignore=shutil.ignore_patterns("smoke-data"))
    output = tmp_path / "exported"

    with pytest.raises(LauncherError, match=r"is not a launcher run directory .*--run-dir"):
        export_checkpoint(tmp_path, output)
    with pytest.raises(
        LauncherError,
        match=rf"no .*checkpoint-7; .* steps: {FIRST_KEPT}, {BEFORE}, {LAST}\. Pick one",
    ):
        export_checkpoint(copy, output, step=7)

    (checkpoint(copy, LAST) / "launcher-complete.json").unlink()
    with pytest.raises(
        LauncherError,
        match=rf"checkpoint-{LAST} is incomplete \(no completion manifest.*steps: {FIRST_KEPT}, "
        rf"{BEFORE}; pick one",
    ):
        export_checkpoint(copy, output, step=LAST)
    export_checkpoint(copy, output)  # the newest complete one is now the one before
    assert last_line(capsys).startswith(f"exported step {BEFORE} of {copy} (")

    with pytest.raises(
        LauncherError, match=r"exported: this folder is not empty; name a new folder"
    ):
        export_checkpoint(copy, output)

    (checkpoint(copy, BEFORE) / "launcher-complete.json").unlink()
    (checkpoint(copy, FIRST_KEPT) / "launcher-complete.json").unlink()
    with pytest.raises(
        LauncherError,
        match=rf"no complete checkpoint in .*checkpoint-{FIRST_KEPT}: no completion manifest .*; "
        rf"checkpoint-{BEFORE}: no completion manifest .*; checkpoint-{LAST}: no completion manifest",
    ):
        export_checkpoint(copy, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_a_terminal_gets_a_progress_bar_a_log_does_not(
    trained: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = trained("ddp")
    for tty in (False, True):
        stream = io.StringIO()
        stream.isatty = lambda tty=tty: tty  # type: ignore[method-assign]
        monkeypatch.setattr(sys, "stderr", stream)
        export_checkpoint(run_dir, tmp_path / f"tty-{tty}")
        bar = re.search(r"checking tensors: 100%\|.*\| (\d+)/\1 ", stream.getvalue())
        assert bool(bar) == tty, stream.getvalue()[-500:]
    assert int(bar.group(1)) == len(load_weights(tmp_path / "tty-True"))


def test_a_differing_tensor_fails_the_check(trained: Callable[[str], Path], tmp_path: Path) -> None:
    run_dir = trained("ddp")
    exported = export_checkpoint(run_dir, tmp_path / "exported")
    loaded = load_saved_model(checkpoint(run_dir, LAST), "sft", trust_remote_code=False)
    loaded.truth["model.norm.weight"] = loaded.truth["model.norm.weight"] + 1e-3

    with pytest.raises(LauncherError, match=r"model\.norm\.weight: max abs diff 0\.001"):
        compare_export(loaded, exported)
