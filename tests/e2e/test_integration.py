"""End to end through the real CLI: ``launcher run`` -> ``accelerate launch`` -> real ranks on CPU.

Every test trains real steps and checks what the run left behind: the world size each rank saw,
checkpoints, metrics, and a final model that loads with ``from_pretrained``.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from conftest import launcher, load_weights, metrics, start_launcher
from run_scenarios import STEPS, rank_log_since, scenario_args
from run_scenarios import data_preparation as data_preparation_in

from launcher.cli import main

if TYPE_CHECKING:
    from shared_runs import SharedRuns

pytestmark = pytest.mark.integration
pytest_plugins = ["shared_runs"]

AUTO_CLASSES = {
    "sft-mistral": "AutoModelForCausalLM",
    "mlm-scratch": "AutoModelForMaskedLM",
    "classification-imdb": "AutoModelForSequenceClassification",
    "ner": "AutoModelForTokenClassification",
    # QLoRA on conversations, the loss on the answers: its final model is the adapter, which
    # transformers loads onto the base it names (RUN/base-model) through peft.
    "sft-qlora-7b": "AutoModelForCausalLM",
}


def rank_lines(run_dir: Path, rank: int) -> str:
    return (run_dir / "logs" / f"rank-{rank}.log").read_text()


@pytest.mark.parametrize("recipe", sorted(AUTO_CLASSES))
def test_smoke_recipe_on_two_ddp_ranks(
    recipe: str,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_runs: SharedRuns,
    capsys: pytest.CaptureFixture,
) -> None:
    """Each workload on two DDP ranks, then `launcher predict` with its model. SFT's run is the
    shared reference run of ddp-2-ranks (shared_runs.py: 60 steps, a checkpoint every 2, the
    recipe's 3 kept); the others train here."""
    if recipe == "sft-mistral":
        run_dir, steps = shared_runs.reference("ddp-2-ranks"), STEPS
    else:
        monkeypatch.setenv("LAUNCHER_CACHE", str(workdir / "cache"))
        run_dir, steps = workdir / "run", 6
        command = [
            "run",
            recipe,
            "--smoke",
            "--run-dir",
            str(run_dir),
            "distributed.processes_per_node=2",
            # A Trainer argument with no recipe key, passed through: the ranks' Trainer takes it.
            "training.extra.logging_nan_inf_filter=false",
        ]
        launcher(*command, cwd=workdir)
        trainer_args = json.loads((run_dir / "plan" / "trainer_args.json").read_text())
        assert trainer_args["logging_nan_inf_filter"] is False

    summary = (run_dir / "plan" / "summary.txt").read_text()
    assert "world size     2 = 1 node(s) x 2 process(es)" in summary
    for rank in (0, 1):  # each rank checked its own world against the plan before step 1
        assert re.search(rf"rank {rank} on \S+: world 2, global batch", rank_lines(run_dir, rank))
    result = json.loads((run_dir / "result.json").read_text())
    assert result["global_step"] == steps
    losses = [m["loss"] for m in metrics(run_dir) if "loss" in m]
    assert len(losses) == steps and all(loss == loss and loss > 0 for loss in losses)
    # Rank 0 prepared the data into the cache; rank 1 loaded that copy instead of its own.
    assert data_preparation(run_dir)[0] == "prepared"
    recorded = json.loads((run_dir / "data-summary.json").read_text())
    assert recorded["key"] == data_preparation(run_dir)[1]
    assert recorded["splits"]["train"]["rows"] > 0
    assert "data: warning" not in rank_lines(run_dir, 1)
    assert_metrics_and_tensorboard(run_dir, workdir, steps)
    # The tokenizer stage ended with its one-line summary (rank 0 trained it).
    assert re.search(
        r"^tokenizer: \w+, \d+ tokens, trained on [\d.]+ (B|KiB|MiB) \(\d+ texts\) in [\d.]+ m?s "
        rf"-> {re.escape(str(run_dir / 'tokenizer'))}$",
        rank_lines(run_dir, 0),
        re.M,
    ), rank_lines(run_dir, 0)[-3000:]
    assert (run_dir / "checkpoints" / f"checkpoint-{steps}" / "launcher-complete.json").exists()
    if recipe == "sft-qlora-7b":  # 4-bit frozen weights on both ranks (a CPU repacking bug)
        assert re.search(r"adapters: [\d,]+ trainable parameters", rank_lines(run_dir, 0))
        assert "loss on the assistant turns only" in summary
        assert "eval_loss" in result["final_metrics"]  # evaluated mid-run, then trained on
    if recipe == "sft-mistral":  # chat SFT (run_scenarios): the loss on the answers only
        assert "loss on the assistant turns only" in summary
        assert "with the ChatML chat template" in summary
        saved = (run_dir / "model" / "chat_template.jinja").read_text()  # predict renders with it
        assert "{%- generation %}" in saved
    if recipe == "sft-mistral":  # retention ran after each save: the newest 3 are left
        kept = sorted(
            int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*")
        )
        assert kept == [steps - 4, steps - 2, steps]

    import transformers

    model = getattr(transformers, AUTO_CLASSES[recipe]).from_pretrained(run_dir / "model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(run_dir / "model")
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    if recipe == "classification-imdb":
        assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
        assert 0.0 <= result["final_metrics"]["eval_accuracy"] <= 1.0
        for score in ("eval_precision", "eval_recall", "eval_f1"):  # the positive class's
            assert 0.0 <= result["final_metrics"][score] <= 1.0
        assert result["final_metrics"]["eval_loss"] < 1.0  # ~ln 2; 2x would mean doubled losses
    if recipe == "ner":
        assert model.config.id2label[1] == "B-PER"
        for score in ("eval_precision", "eval_recall", "eval_f1", "eval_accuracy"):
            assert 0.0 <= result["final_metrics"][score] <= 1.0
    assert_predictions(recipe, run_dir, workdir, result, capsys)
    if recipe == "mlm-scratch":
        assert "eval_perplexity" in result["final_metrics"]
        assert_resume_masks_as_the_uninterrupted_run(run_dir, workdir, command)


def assert_predictions(
    recipe: str, run_dir: Path, workdir: Path, result: dict, capsys: pytest.CaptureFixture
) -> None:
    """`launcher predict` (in process: the torch import is paid already) on the run's final
    model. With the run's own evaluation file, which has gold labels, it prints the metrics of
    the run's last evaluation: the same model on the same rows, truncated alike."""
    capsys.readouterr()
    out = workdir / f"{recipe}-predictions.jsonl"
    if recipe in ("classification-imdb", "ner"):
        eval_file = run_dir / "smoke-data" / "eval.jsonl"
        assert main(["predict", str(run_dir), "--input", str(eval_file), "-o", str(out)]) == 0
        printed = capsys.readouterr().out
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == len(eval_file.read_text().splitlines())
        scores = dict(re.findall(r"(\w+) ([\d.]+)", printed.split("inputs:", 1)[1]))
        for name in ("accuracy", "precision", "recall", "f1"):
            expected = result["final_metrics"][f"eval_{name}"]
            assert float(scores[name]) == pytest.approx(expected, abs=1e-4), (name, printed)
    if recipe == "ner":
        text = "Yesterday Alice Emma flew to Paris with Acme ."
        assert main(["predict", str(run_dir), "--text", text, "--checkpoint", "3"]) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        for entity in row["entities"]:
            assert entity["text"] == text[entity["start"] : entity["end"]]
            assert entity["label"] in {"PER", "ORG", "LOC", "MISC"}
    if recipe == "mlm-scratch":
        argv = ["predict", str(run_dir), "--text", "the [MASK] sat on the [MASK].", "--top-k", "3"]
        assert main(argv) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [len(mask["fillers"]) for mask in row["masks"]] == [3, 3]
        scores = [filler["score"] for filler in row["masks"][0]["fillers"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1
    if recipe == "sft-qlora-7b":  # a chat model answers a user's message (rendered as trained)
        assert main(["predict", str(run_dir), "--text", "Hello?", "--max-new-tokens", "4"]) == 0
        (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert row["prompt"] == "Hello?" and row["generated"]
    if recipe == "sft-mistral":
        (workdir / "prompts.txt").write_text("The old man\nOnce upon a time\n")
        argv = ["predict", str(run_dir), "--input", str(workdir / "prompts.txt")]
        assert main([*argv, "--max-new-tokens", "4", "-o", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [row["prompt"] for row in rows] == ["The old man", "Once upon a time"]
        assert all(row["generated"] for row in rows)


def assert_resume_masks_as_the_uninterrupted_run(
    run_dir: Path, workdir: Path, command: list[str]
) -> None:
    """The run as if killed after its checkpoint at step 3, continued by the same command: its
    final weights equal the uninterrupted run's (within 1e-6, as for two DDP ranks in
    test_fault_injection.py). MLM masks at random, and the data loader collates the batch after
    a checkpoint before saving it: masks from the global RNG came out otherwise on resume."""
    uninterrupted = workdir / "uninterrupted-model"
    shutil.copytree(run_dir / "model", uninterrupted)
    assert (run_dir / "checkpoints" / "checkpoint-3" / "launcher-complete.json").exists()
    shutil.rmtree(run_dir / "checkpoints" / "checkpoint-6")
    shutil.rmtree(run_dir / "model")
    (run_dir / "result.json").unlink()
    out = launcher(*command, cwd=workdir)
    assert "continuing run" in out.stdout
    assert json.loads((run_dir / "result.json").read_text())["resumed_from"].endswith(
        "checkpoint-3"
    )
    expected, got = load_weights(uninterrupted), load_weights(run_dir / "model")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], rtol=0, atol=1e-6), name


def assert_metrics_and_tensorboard(run_dir: Path, workdir: Path, steps: int) -> None:
    """Every training log has its measured throughput; TensorBoard has the same losses; and
    `launcher plot` draws them."""
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = [m for m in metrics(run_dir) if "loss" in m]
    world = json.loads((run_dir / "plan" / "contract.json").read_text())
    for log in logs:
        seconds = log["interval_seconds"]
        assert seconds > 0
        # samples/s is steps x global batch over the interval (one step per log here).
        assert log["samples_per_second"] == pytest.approx(
            world["global_batch_size"] / seconds, rel=1e-3
        )
        assert log["tokens_per_second"] > 0
    tokens = [log["num_input_tokens_seen"] for log in logs]
    assert tokens == sorted(tokens) and tokens[0] > 0

    # Rank 0 writes them; a final evaluation after training opens a second file.
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    scalars = accumulator.Scalars("train/loss")
    assert [event.step for event in scalars] == [log["step"] for log in logs]
    assert [event.value for event in scalars] == pytest.approx([log["loss"] for log in logs])
    assert "train/learning_rate" in accumulator.Tags()["scalars"]

    out = launcher("plot", str(run_dir), "-o", str(workdir / "plot.png"), cwd=workdir)
    assert out.stdout.strip().endswith(f"-> {workdir / 'plot.png'}")
    assert out.stdout.startswith(f"plot: steps 1-{steps} (loss")
    assert Image.open(workdir / "plot.png").size == (1200, 900)


@pytest.mark.parametrize("stage", [2, 3])
def test_sft_deepspeed_zero_two_ranks_paged_adamw(stage: int, shared_runs: SharedRuns) -> None:
    """The shared reference runs of zero2-2-ranks and zero3-2-ranks: the recipe's paged AdamW under
    DeepSpeed on two CPU ranks, accumulating over 2 micro-batches, each rank saving its shards."""
    run_dir = shared_runs.reference(f"zero{stage}-2-ranks")
    assert "training.gradient_accumulation_steps=2" in scenario_args(f"zero{stage}-2-ranks")

    assert f"DeepSpeed ZeRO-{stage}" in (run_dir / "plan" / "summary.txt").read_text()
    ds = json.loads((run_dir / "plan" / "deepspeed.json").read_text())
    assert ds["gradient_accumulation_steps"] == 2
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * 2 * 2
    for rank in (0, 1):
        log = rank_lines(run_dir, rank)
        assert f"world 2, global batch {ds['train_batch_size']} as planned" in log
    # The optimizer that really steps, unwrapped from DeepSpeed's wrappers.
    assert "bitsandbytes.optim.adamw.AdamW (paged, 32-bit states)" in rank_lines(run_dir, 0)
    last = run_dir / "checkpoints" / f"checkpoint-{STEPS}"
    for rank in (0, 1):
        shard = last / f"global_step{STEPS}" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
        assert shard.exists()
    assert (last / "launcher-complete.json").exists()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_graceful_stop_saves_and_continues_to_the_same_weights(
    workdir: Path, shared_runs: SharedRuns
) -> None:
    """Ctrl-C (SIGINT to the launcher) saves a checkpoint at the step it was at, reported as
    SIGINT; the same command continues from it to the weights of the run never stopped (the shared reference).

    A run killed (SIGKILL) and resumed is test_fault_injection.py, ten times per scenario, with
    its checks that the last run continued from the newest complete checkpoint and loaded the
    data the first run prepared (the data cache)."""
    args = scenario_args("ddp-1-rank")
    stopped = workdir / "stopped"
    process = start_launcher("run", *args, "--run-dir", str(stopped), cwd=workdir, capture=True)
    deadline = time.monotonic() + 600
    while not (stopped / "metrics.jsonl").exists() or len(metrics(stopped)) < 3:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "the run logged no 3 steps in 600 s"
        time.sleep(0.02)
    # One writer: the same command in a second terminal is refused while this one trains.
    second = launcher("run", *args, "--run-dir", str(stopped), cwd=workdir, check=False)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is in use by `launcher run`, pid {process.pid} on host" in second.stderr
    assert f"kill {process.pid}" in second.stderr and "Traceback" not in second.stderr
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends (the ranks are in their own session)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 130, output[-3000:]
    assert "interrupted (SIGINT): asking the ranks to save and stop" in output
    match = re.search(r"stopped on SIGINT with a complete checkpoint at step (\d+)", output)
    assert match, output[-3000:]
    step = int(match.group(1))
    saved = stopped / "checkpoints" / f"checkpoint-{step}"
    assert (saved / "launcher-complete.json").exists()
    assert not (stopped / "result.json").exists()

    offset = (stopped / "logs" / "rank-0.log").stat().st_size
    assert not (stopped / "lock.json").exists()  # a launcher that stopped gave the run up
    # The same command continues it; a Ctrl-C that comes once the ranks have saved the model and
    # written their result (they are exiting) loses nothing, and is no failure (it was reported
    # as "training failed ... killed from outside").
    process = start_launcher("run", *args, "--run-dir", str(stopped), cwd=workdir, capture=True)
    while not (stopped / "result.json").exists():
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert time.monotonic() < deadline, "the continued run wrote no result"
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "continuing run" in output and "taking over" not in output
    assert "finished in" in output and "training failed" not in output, output[-3000:]
    assert f"resuming from {saved}" in rank_log_since(stopped, 0, offset)
    resumed = json.loads((stopped / "result.json").read_text())
    assert resumed["global_step"] == STEPS and resumed["resumed_from"] == str(
        saved.relative_to(stopped)
    )
    assert_same_weights(shared_runs.reference("ddp-1-rank") / "model", stopped / "model")


def data_preparation(run_dir: Path) -> tuple[str, str]:
    """How rank 0 last had its data (``prepared`` or ``cache hit``) and the cache key."""
    return data_preparation_in(rank_lines(run_dir, 0))


def assert_same_weights(expected_dir: Path, got_dir: Path) -> None:
    expected, got = load_weights(expected_dir), load_weights(got_dir)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), f"{name} differs after resume"


def test_rank_refuses_a_world_size_other_than_the_plan(workdir: Path) -> None:
    """`accelerate launch --cpu --num_processes 2` starts ONE process; the rank must notice."""
    run_dir = workdir / "mismatch"
    launcher(
        "plan",
        "classification-imdb",
        "--smoke",
        "--run-dir",
        str(run_dir),
        "distributed.processes_per_node=2",
        "-o",
        str(run_dir / "plan"),
        cwd=workdir,
    )
    (run_dir / "smoke-data").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "-m",
            "launcher.ranks.entry",
            str(run_dir),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    log = rank_lines(run_dir, 0)
    assert "world_size: plan 2, rank sees 1" in log
    assert "Plan: 4 x 1 x 2 = 8" in log
    assert not (run_dir / "checkpoints").exists()


def test_classification_from_a_local_pretrained_folder(workdir: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = workdir / "tiny bert"
    vocab = workdir / "vocab.txt"
    words = "the a film was great awful good bad movie plot acting boring superb".split()
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_labels=2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    original = load_weights(folder)
    data = workdir / "reviews.csv"
    rows = ["review,sentiment"] + [
        f"the film was {'great superb' if i % 2 else 'awful boring'},{'pos' if i % 2 else 'neg'}"
        for i in range(40)
    ]
    data.write_text("\n".join(rows) + "\n")
    recipe = workdir / "local.yaml"
    recipe.write_text(
        f"""# launcher run local.yaml
name: local-bert
task: classification
model: {{pretrained: "{folder}"}}
data:
  files: {{train: "{data}"}}
  eval_fraction: 0.25
  text_column: review
  label_column: sentiment
  labels: [neg, pos]
  max_length: 32
training: {{max_steps: 4, per_device_batch_size: 4, precision: fp32, learning_rate: 1.0e-3,
           eval_strategy: steps, eval_steps: 2, logging_steps: 1}}
checkpointing: {{strategy: steps, every_steps: 2}}
"""
    )
    run_dir = workdir / "run"
    launcher("run", str(recipe), "--run-dir", str(run_dir), cwd=workdir)

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model")
    assert model.config.id2label == {0: "neg", 1: "pos"}
    trained = load_weights(run_dir / "model")
    embedding = "bert.embeddings.word_embeddings.weight"
    assert trained[embedding].shape == original[embedding].shape  # no resize was needed
    assert not torch.equal(trained[embedding], original[embedding])  # it trained


def test_tokenizer_command_saves_a_loadable_tokenizer(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tokenizer cache of its own: from another test's cache it would not say "trained on".
    monkeypatch.setenv("LAUNCHER_CACHE", str(workdir / "cache"))
    out = launcher("tokenizer", "mlm-scratch", "--smoke", "-o", str(workdir / "tok"), cwd=workdir)
    # One line: kind, size, what it was trained on, where it is; then the vocabulary size.
    summary, size = out.stdout.strip().splitlines()
    assert re.fullmatch(
        r"tokenizer: wordpiece, \d+ tokens, trained on [\d.]+ (B|KiB|MiB) \(\d+ texts\) in "
        rf"[\d.]+ m?s -> {re.escape(str(workdir / 'tok'))}",
        summary,
    ), out.stdout
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(workdir / "tok")
    ids = tokenizer("the same day")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert len(tokenizer) <= 512 and size == f"vocabulary size: {len(tokenizer)}"
    assert not any(workdir.glob("runs")), "the tokenizer command left a run directory behind"


def test_a_checkpoint_cut_short_is_skipped_and_kept(
    killed_run: Callable[[str], Path], shared_runs: SharedRuns
) -> None:
    """As if killed while writing its last checkpoint: its optimizer file is short of the
    manifest; and the one before had a byte of its weights flipped by a flaky file system, its
    size unchanged (the manifest's checksum finds it). Resume goes back one more checkpoint. On
    the fault-injection run of ddp-1-rank, finished and equal to the reference."""
    run_dir, args = killed_run("ddp-1-rank"), scenario_args("ddp-1-rank")
    whole = shared_runs.reference("ddp-1-rank")
    checkpoints = run_dir / "checkpoints"
    set_aside = set(checkpoints.glob("incomplete-checkpoint-*"))
    optimizer = checkpoints / f"checkpoint-{STEPS}" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    weights = checkpoints / f"checkpoint-{STEPS - 2}" / "model.safetensors"
    flipped = bytearray(weights.read_bytes())
    flipped[-9] ^= 0x10  # inside the last tensor's data
    weights.write_bytes(bytes(flipped))
    assert (checkpoints / f"checkpoint-{STEPS - 4}" / "launcher-complete.json").exists()
    (run_dir / "result.json").unlink()

    offset = (run_dir / "logs" / "rank-0.log").stat().st_size
    launcher("run", *args, "--run-dir", str(run_dir), cwd=run_dir.parent)
    log = rank_log_since(run_dir, 0, offset)
    assert re.search(
        rf"skipping checkpoint-{STEPS - 2}: model\.safetensors's bytes changed since it was "
        rf"saved \(xxh3_64-blocks [0-9a-f]+, the manifest says [0-9a-f]+\) although its size "
        rf"did not; "
        rf"kept as .*incomplete-checkpoint-{STEPS - 2}-",
        log,
    ), log[-3000:]
    assert re.search(
        rf"skipping incomplete checkpoint-{STEPS} \(optimizer\.pt has \d+ bytes, the "
        rf"manifest says \d+\); kept as .*incomplete-checkpoint-{STEPS}-",
        log,
    ), log[-3000:]
    assert f"resuming from {checkpoints / f'checkpoint-{STEPS - 4}'}" in log, log[-3000:]
    kept = set(checkpoints.glob("incomplete-checkpoint-*")) - set_aside
    assert sorted(p.name.rsplit("-", 1)[0] for p in kept) == [
        f"incomplete-checkpoint-{STEPS - 2}",
        f"incomplete-checkpoint-{STEPS}",
    ]
    for folder in kept:  # the cut and the changed files are kept, not deleted
        assert (folder / "optimizer.pt").exists() and (folder / "model.safetensors").exists()
    assert_same_weights(whole / "model", run_dir / "model")
    # Killed after the final checkpoint but before the end: finish from it, no step beyond.
    shutil.rmtree(run_dir / "model")
    (run_dir / "result.json").unlink()
    offset = (run_dir / "logs" / "rank-0.log").stat().st_size
    launcher("run", *args, "--run-dir", str(run_dir), cwd=run_dir.parent)
    assert f"training had finished at checkpoint-{STEPS}" in rank_log_since(run_dir, 0, offset)
    assert max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*")) == STEPS
    assert json.loads((run_dir / "result.json").read_text())["global_step"] == STEPS
    assert_same_weights(whole / "model", run_dir / "model")


def forget_last_checkpoint(run_dir: Path) -> None:
    """As if the run had been stopped after the checkpoint before its last."""
    shutil.rmtree(run_dir / "checkpoints" / f"checkpoint-{STEPS}")
    shutil.rmtree(run_dir / "model")
    (run_dir / "result.json").unlink()


def test_ddp_run_continues_on_another_world_size(killed_run: Callable[[str], Path]) -> None:
    """The fault-injection run of ddp-2-ranks, continued on one rank."""
    run_dir = killed_run("ddp-2-ranks")
    assert "distributed.processes_per_node=2" in scenario_args("ddp-2-ranks")
    forget_last_checkpoint(run_dir)
    offset = (run_dir / "logs" / "rank-0.log").stat().st_size
    one_rank = [*scenario_args("ddp-2-ranks"), "distributed.processes_per_node=1"]
    out = launcher("run", *one_rank, "--run-dir", str(run_dir), cwd=run_dir.parent)
    assert "continuing" in out.stdout and "on another world size" in out.stdout
    resumed = run_dir / "checkpoints" / f"checkpoint-{STEPS - 2}"
    log = rank_log_since(run_dir, 0, offset)
    assert f"resuming from {resumed}" in log and "world 1, global batch" in log, log[-3000:]
    assert json.loads((run_dir / "result.json").read_text())["global_step"] == STEPS


def test_zero_shards_refuse_another_world_size_before_training(
    killed_run: Callable[[str], Path],
) -> None:
    """The fault-injection run of zero2-2-ranks (two ranks), continued on one: refused."""
    run_dir = killed_run("zero2-2-ranks")
    forget_last_checkpoint(run_dir)
    logged = (run_dir / "metrics.jsonl").read_text()
    out = launcher(
        "run",
        *scenario_args("zero2-2-ranks"),
        "distributed.processes_per_node=1",
        "--run-dir",
        str(run_dir),
        cwd=run_dir.parent,
        check=False,
    )
    assert out.returncode == 1
    assert (
        f"checkpoint-{STEPS - 2} holds DeepSpeed ZeRO-2 shards written by 2 ranks, but this run "
        "has 1" in (out.stderr + out.stdout)
    )
    assert "launcher export" in out.stderr + out.stdout
    assert not (run_dir / "checkpoints" / f"checkpoint-{STEPS}").exists(), "it trained anyway"
    assert (run_dir / "metrics.jsonl").read_text() == logged, "it trained anyway"
