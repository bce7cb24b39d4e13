"""Inside every rank: train the run directory's plan.

Started by ``accelerate launch`` (see ``plan/command.sh`` of a run), never by hand:

    python -m accelerate.commands.launch --config_file RUN/plan/accelerate.yaml \\
        -m launcher.ranks.entry RUN

Reads the plan (resolved recipe, contract, Trainer arguments), checks the world it really got
against the contract, prepares tokenizer and data once (rank 0 first, the others reuse its work),
resumes from the newest complete checkpoint, trains, and saves the final model.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

from launcher.contract import PROGRESS_ENV, RunContract, RunLayout
from launcher.errors import LauncherError
from launcher.files import write_text_atomic
from launcher.ranks import runtime
from launcher.ranks.logs import Tee, guard_secrets, prints_to_log_only, rank_log
from launcher.ranks.quiet import quiet_library_noise
from launcher.recipe.schema import Recipe


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: python -m launcher.ranks.entry RUN_DIR (started by launcher run)",
            file=sys.stderr,
        )
        return 2
    layout = RunLayout(Path(argv[1]).absolute())
    rank = int(os.environ.get("RANK", "0"))
    quiet_library_noise()
    with rank_log(layout.rank_log(rank)):
        try:
            train(layout)
            runtime.close_distributed()
        except LauncherError as error:
            print(f"[launcher] rank {rank}: error: {error}", file=sys.stderr, flush=True)
            record_failure(layout, rank, str(error))
            return 1
        except BaseException as error:
            report_failure(layout, rank, error)
            return 1
    return 0


def report_failure(layout: RunLayout, rank: int, error: BaseException) -> None:
    """Say once why this rank failed, and record it for ``launcher status``. The traceback goes
    to the terminal only when it is the best account there is: where a sentence says it better
    (a collective that timed out, a full disk), or where it says only that another rank failed
    first, it stays in the rank's log."""
    details = traceback.format_exc()
    first = failed_first(layout, rank, error)
    report = None if first is not None else explain(layout, rank, error)
    if first is None and report is None:
        print(f"[launcher] rank {rank} failed:\n{details}", file=sys.stderr, flush=True)
        record_failure(layout, rank, details)
        return
    keep_in_log(f"[launcher] rank {rank} failed:\n{details}")
    if report is not None:
        print(f"[launcher] rank {rank}: error: {report}", file=sys.stderr, flush=True)
        details = f"{details}\n{report}"
    else:
        print(
            f"[launcher] rank {rank}: stopped after rank {first} failed",
            file=sys.stderr,
            flush=True,
        )
    record_failure(layout, rank, details, after_rank=first)


# How gloo and NCCL word a collective whose peer process has ended.
LOST_PEER_WORDS = (
    "closed by peer", "reset by peer", "Broken pipe", "remote process exited",
    "communicator was aborted", "Connection refused",
)  # fmt: skip


def failed_first(layout: RunLayout, rank: int, error: BaseException) -> int | None:
    """The rank whose failure this one only follows, or None: a collective that lost its peer
    while another rank of this attempt had already recorded an error (its error is the one the
    user needs; this rank's traceback would only say that a connection closed)."""
    if not isinstance(error, RuntimeError) or not any(w in str(error) for w in LOST_PEER_WORDS):
        return None
    for other in layout.failure_records():
        if other.get("rank") != rank and other.get("after_rank") is None:
            return int(other["rank"])
    return None


def keep_in_log(text: str) -> None:
    """Write to the rank's log only (to stderr outside ``rank_log``)."""
    if isinstance(sys.stderr, Tee):
        sys.stderr.write_log_only(text + "\n")
    else:
        print(text, file=sys.stderr, flush=True)


def explain(layout: RunLayout, rank: int, error: BaseException) -> str | None:
    """A failure's cause in the user's terms where the libraries' words hide it: a collective
    that timed out (who did not arrive), a full disk (what is safe, what to free)."""
    from launcher.ranks.disk_full import disk_full_report, is_disk_full
    from launcher.ranks.heartbeat import is_collective_timeout, timeout_report

    try:
        if is_collective_timeout(error):
            recipe = yaml.safe_load(layout.recipe_file.read_text()) or {}
            timeout = float((recipe.get("distributed") or {}).get("timeout_min", 30))
            return timeout_report(layout, rank, timeout, error)
        checkpoints = RunContract.read(layout.contract_file).checkpoints_folder()
        if is_disk_full(error, checkpoints):
            return disk_full_report(checkpoints, error)
    except Exception as failed:  # the explanation must never hide the failure itself
        print(f"[launcher] could not explain the failure: {failed}", file=sys.stderr)
    return None


def record_failure(
    layout: RunLayout, rank: int, details: str, after_rank: int | None = None
) -> None:
    """What ``launcher status`` shows of a failed rank: where it ran, how it ended, and whether
    it only followed another rank's failure (``after_rank``)."""
    import socket

    from launcher.secret_env import mask, secret_values

    # A traceback may quote a secret (an exception about a header, say): hide it like the logs do.
    hidden = sys.stderr.hidden if isinstance(sys.stderr, Tee) else secret_values()
    lines = mask(details, hidden).strip().splitlines()
    record = {
        "rank": rank,
        "host": socket.gethostname(),
        "node": os.environ.get("SLURMD_NODENAME"),
        "job_id": os.environ.get("SLURM_JOB_ID"),
        "error": lines[-1] if lines else "",
        "traceback_tail": "\n".join(lines[-15:]),
        "log": str(layout.rank_log(rank)),
    }
    if after_rank is not None:
        record["after_rank"] = after_rank
    try:
        layout.failure_file(rank).write_text(json.dumps(record, indent=2) + "\n")
    except OSError as error:
        print(f"[launcher] could not record the failure: {error}", file=sys.stderr)


def train(layout: RunLayout) -> None:
    contract = RunContract.read(layout.contract_file)
    recipe = Recipe.model_validate(yaml.safe_load(layout.recipe_file.read_text()))
    trainer_args = json.loads(layout.trainer_args_file.read_text())

    from launcher.ranks.heartbeat import Heartbeat  # imports transformers: after the quieting

    state = join_process_group(recipe)
    heartbeat = Heartbeat(layout, state.process_index)  # names this rank if it ever hangs
    try:
        train_in(layout, recipe, contract, trainer_args, state, heartbeat)
    finally:
        heartbeat.close()


def join_process_group(recipe: Recipe) -> Any:
    """The distributed state, with DeepSpeed's JIT-built ops loaded first: under DeepSpeed,
    accelerate's state calls ``deepspeed.init_distributed``, which loads the shared-memory op on
    CPU, and a lock a killed build left would hang it there (``extension_builds``)."""
    if recipe.distributed.strategy == "deepspeed":
        from launcher.ranks.extension_builds import load_deepspeed_ops

        offload = recipe.distributed.offload_optimizer != "none"
        load_deepspeed_ops(runtime.cuda_available(), offload)
    with prints_to_log_only():  # DeepSpeed's "... shm_comm_op built successfully", every rank
        return runtime.init_distributed(recipe.distributed.timeout_min)


def train_in(
    layout: RunLayout,
    recipe: Recipe,
    contract: RunContract,
    trainer_args: dict[str, Any],
    state: Any,
    heartbeat: Any,
) -> None:
    from transformers import set_seed

    from launcher.checkpoints import check_resume_world, choose_checkpoint, training_finished
    from launcher.ranks.adapters import trainable_summary, zero3_partitioning_off
    from launcher.ranks.callbacks import (
        CheckpointCompletion,
        KeepAdapterDtypes,
        MetricsLog,
        PlanGuard,
        ProgressLines,
        labelled_progress_bar,
    )
    from launcher.ranks.data import load_recipe_splits
    from launcher.ranks.data_cache import prepare
    from launcher.ranks.model import build_model, save_base_model
    from launcher.ranks.preemption import StopOnSignal, write_stopped
    from launcher.ranks.token_tags import tag_names
    from launcher.ranks.trackers import prepare_trackers, send_new_logs_only
    from launcher.ranks.trainers import build_trainer, make_training_arguments

    stop = StopOnSignal(state)  # before the slow start-up, so an early signal is not lost
    if state.is_main_process:
        layout.stopped_file.unlink(missing_ok=True)
    use_cpu = not runtime.cuda_available()
    checkpoints = contract.checkpoints_folder()  # this node's, with node-local storage
    # Progress bars only where the user watches a terminal; logs get periodic lines instead.
    progress_bars = os.environ.get(PROGRESS_ENV) == "bar"
    if not progress_bars:  # each library's own bars (dataset maps, saving model shards)
        import datasets
        import huggingface_hub.utils
        import transformers.utils.logging

        datasets.disable_progress_bars()
        huggingface_hub.utils.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    trainer_args = {**trainer_args, "output_dir": str(checkpoints)}
    trainer_args.setdefault("disable_tqdm", not progress_bars)
    args = make_training_arguments(recipe, trainer_args, use_cpu=use_cpu)
    runtime.check_numbers(contract, runtime.numbers_seen(state, args))
    say(
        state,
        f"world size {state.num_processes}, {'CPU' if use_cpu else 'GPU'}, task {recipe.task}",
    )
    say(state, guard_secrets(recipe.secrets))  # every rank hides them; rank 0 names them
    # Before the slow start-up: a missing package or an unreachable MLflow store fails at once.
    trackers = prepare_trackers(recipe, layout, state.is_main_process)
    if trackers is not None:
        say(state, trackers.describe())

    with state.main_process_first():
        # Raw text is read only when needed: to train the tokenizer, or on a data cache miss.
        trains_tokenizer = recipe.tokenizer.train is not None and not layout.tokenizer_dir.exists()
        raw = load_recipe_splits(recipe) if trains_tokenizer else None
        if recipe.task == "token_classification" and not recipe.data.labels:
            raw = raw or load_recipe_splits(recipe)
            recipe.data.labels = tag_names(recipe.data, raw["train"])
            say(state, f"tags from the dataset: {', '.join(recipe.data.labels)}")
        tokenizer = run_tokenizer(recipe, layout, raw, state)
        prepared = prepare(
            recipe,
            tokenizer,
            layout.tokenizer_dir,
            raw,
            log=lambda message: say(state, message),
            is_main=state.is_main_process,
        )
        splits = prepared.splits
        if state.is_main_process:  # `launcher plan` of this run shows it (padding share)
            summary = {"key": prepared.key, "splits": prepared.summary}
            write_text_atomic(layout.data_summary_file, json.dumps(summary, indent=2) + "\n")

    set_seed(args.seed)
    base_folder = None
    if recipe.model.lora is not None and not recipe.model.pretrained:
        base_folder = layout.base_model_dir  # adapters on a model built from config
        if state.is_main_process and not base_folder.is_dir():
            with zero3_partitioning_off(getattr(args, "hf_deepspeed_config", None)):
                save_base_model(recipe, tokenizer, base_folder)
        state.wait_for_everyone()
    model = build_model(recipe, tokenizer, base_folder)  # every rank at once (ZeRO-3 partitions)
    if recipe.model.lora is not None:
        say(state, trainable_summary(model))
    on_each_node = contract.checkpoints_on_each_node
    verify = recipe.checkpointing.verify_checksums
    resume = choose_checkpoint(checkpoints, state, on_each_node, verify)
    dist = recipe.distributed
    zero_stage = dist.zero_stage if dist.strategy == "deepspeed" else None
    check_resume_world(zero_stage, resume, state.num_processes, layout.root)
    callbacks = [
        *([] if progress_bars else [ProgressLines()]),
        PlanGuard(contract, state),
        MetricsLog(layout.metrics_file),
        CheckpointCompletion(state, recipe.checkpointing.keep, resume, on_each_node, verify),
        stop,
        heartbeat,
    ]
    trainer = build_trainer(recipe, model, tokenizer, args, splits, callbacks)
    if recipe.model.lora is not None:
        trainer.add_callback(KeepAdapterDtypes(trainer.model))
    if trackers is not None:  # a resumed attempt sends its trackers no step twice
        send_new_logs_only(trainer, trackers)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if progress_bars:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(labelled_progress_bar())
    else:
        trainer.remove_callback(PrinterCallback)  # ProgressLines says the loss instead
    say(state, f"resuming from {resume}" if resume else "starting from step 0")

    if resume is not None and training_finished(resume):
        # The Trainer would run one step past the end when resumed from the final checkpoint.
        finish_from_checkpoint(layout, resume, state)
        return
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    if stop.stopped_at is not None:
        if state.is_main_process:
            write_stopped(layout.stopped_file, stop.stopped_at, stop.signal_name)
        say(state, f"stopped on {stop.signal_name} at step {stop.stopped_at}; checkpoint saved")
        return
    final_metrics = trainer.evaluate() if "eval" in splits else {}
    # The final model goes once into the shared run directory, even when every node kept its
    # own checkpoints (two nodes writing the same files would race).
    trainer.args.save_on_each_node = False
    trainer.save_model(str(layout.model_dir))
    if state.is_main_process:
        tokenizer.save_pretrained(layout.model_dir)
        write_result(layout, trainer.state.global_step, resume, final_metrics)
    state.wait_for_everyone()
    say(state, f"done: model saved to {layout.model_dir}")


MODEL_FILE_SKIP = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args",
                   "launcher-complete", "zero_to_", "latest", "README")  # fmt: skip


def finish_from_checkpoint(layout: RunLayout, checkpoint: Path, state: Any) -> None:
    """The final model is that checkpoint's model files (the best one's, when one was chosen)."""
    import shutil

    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    source = Path(trainer_state.get("best_model_checkpoint") or checkpoint)
    if state.is_main_process:
        layout.model_dir.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            if path.is_file() and not path.name.startswith(MODEL_FILE_SKIP):
                shutil.copy2(path, layout.model_dir / path.name)
        evals = [e for e in trainer_state.get("log_history", []) if "eval_loss" in e]
        write_result(layout, trainer_state["global_step"], checkpoint, evals[-1] if evals else {})
    state.wait_for_everyone()
    say(state, f"training had finished at {checkpoint.name}; model saved to {layout.model_dir}")


def in_run_dir(layout: RunLayout, path: Path) -> str:
    """``path`` relative to the run directory when it lies inside it (else as it is)."""
    try:
        return str(Path(path).relative_to(layout.root))
    except ValueError:
        return str(path)


def write_result(
    layout: RunLayout, step: int, resumed_from: Path | None, metrics: dict[str, Any]
) -> None:
    """``result.json``: the run finished; written last, by rank 0. Paths inside the run directory
    are relative to it, so that they stay true when the folder is moved (``--from-scratch``)."""
    result = {
        "global_step": step,
        "model_dir": layout.model_dir.name,
        "resumed_from": in_run_dir(layout, resumed_from) if resumed_from else None,
        "final_metrics": metrics,
    }
    write_text_atomic(layout.result_file, json.dumps(result, indent=2) + "\n")


def run_tokenizer(
    recipe: Recipe, layout: RunLayout, splits: dict[str, Any] | None, state: Any
) -> Any:
    """Rank 0 builds and saves the tokenizer (first attempt only); everyone loads the saved one.

    ``splits`` hold the training text when the caller loaded it; None loads it if training needs it.
    """
    from launcher.ranks.tokenizer import describe
    from launcher.ranks.tokenizer_stage import build_tokenizer, load_saved_tokenizer, save_tokenizer

    if not layout.tokenizer_dir.exists():
        if not state.is_main_process:
            raise LauncherError(f"rank 0 did not save the tokenizer to {layout.tokenizer_dir}")
        tokenizer = build_tokenizer(recipe, splits)
        save_tokenizer(tokenizer, layout.tokenizer_dir)
        say(state, f"tokenizer saved to {layout.tokenizer_dir}: {describe(tokenizer)}")
    return load_saved_tokenizer(
        layout.tokenizer_dir, trust_remote_code=recipe.model.trust_remote_code
    )


def say(state: Any, message: str) -> None:
    if state.is_main_process:
        print(f"[launcher] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
