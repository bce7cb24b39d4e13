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

from launcher.contract import RunContract, RunLayout
from launcher.errors import LauncherError
from launcher.ranks.logs import guard_secrets, rank_log
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
    with rank_log(layout.rank_log(rank)):
        try:
            train(layout)
        except LauncherError as error:
            print(f"[launcher] rank {rank}: error: {error}", file=sys.stderr, flush=True)
            record_failure(layout, rank, str(error))
            return 1
        except BaseException:
            details = traceback.format_exc()
            print(f"[launcher] rank {rank} failed:\n{details}", file=sys.stderr, flush=True)
            record_failure(layout, rank, details)
            return 1
    return 0


def record_failure(layout: RunLayout, rank: int, details: str) -> None:
    """What ``launcher status`` shows of a failed rank: where it ran and how it ended."""
    import socket

    from launcher.ranks.logs import Tee
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
    try:
        layout.failure_file(rank).write_text(json.dumps(record, indent=2) + "\n")
    except OSError as error:
        print(f"[launcher] could not record the failure: {error}", file=sys.stderr)


def train(layout: RunLayout) -> None:
    from transformers import set_seed

    from launcher.ranks import runtime
    from launcher.ranks.callbacks import CheckpointCompletion, MetricsLog, PlanGuard
    from launcher.ranks.data import load_raw_splits
    from launcher.ranks.model import build_model
    from launcher.ranks.preemption import StopOnSignal, write_stopped
    from launcher.ranks.prepared import prepare
    from launcher.ranks.trainers import build_trainer, training_arguments

    contract = RunContract.read(layout.contract_file)
    recipe = Recipe.model_validate(yaml.safe_load(layout.recipe_file.read_text()))
    trainer_args = json.loads(layout.trainer_args_file.read_text())

    state = runtime.init_distributed(contract)
    stop = StopOnSignal(state)  # before the slow start-up, so an early signal is not lost
    if state.is_main_process:
        layout.stopped_file.unlink(missing_ok=True)
    use_cpu = not runtime.cuda_available()
    checkpoints = contract.checkpoints_folder()  # this node's, with node-local storage
    trainer_args = {**trainer_args, "output_dir": str(checkpoints)}
    args = training_arguments(recipe, trainer_args, use_cpu=use_cpu)
    runtime.check_numbers(contract, runtime.numbers_seen(state, args))
    say(
        state,
        f"world size {state.num_processes}, {'CPU' if use_cpu else 'GPU'}, task {recipe.task}",
    )
    say(state, guard_secrets(recipe.secrets))  # every rank hides them; rank 0 names them

    with state.main_process_first():
        # Raw text is read only when needed: to train the tokenizer, or on a data cache miss.
        trains_tokenizer = recipe.tokenizer.train is not None and not layout.tokenizer_dir.exists()
        raw = load_raw_splits(recipe.data) if trains_tokenizer else None
        tokenizer = run_tokenizer(recipe, layout, raw, state)
        splits = prepare(
            recipe,
            tokenizer,
            layout.tokenizer_dir,
            raw,
            log=lambda message: say(state, message),
            is_main=state.is_main_process,
        ).splits

    set_seed(args.seed)
    model = build_model(recipe, tokenizer)
    on_each_node = contract.checkpoints_on_each_node
    resume = choose_checkpoint(checkpoints, state, on_each_node)
    check_resume_world(recipe, resume, state.num_processes, layout.root)
    callbacks = [
        PlanGuard(contract, state),
        MetricsLog(layout.metrics_file),
        CheckpointCompletion(state, recipe.checkpointing.keep, resume, on_each_node),
        stop,
    ]
    trainer = build_trainer(recipe, model, tokenizer, args, splits, callbacks)
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


def choose_checkpoint(folder: Path, state: Any, on_each_node: bool) -> Path | None:
    """The newest complete checkpoint (with node-local storage: the newest one complete on every
    node); incomplete ones are named and moved aside, not deleted."""
    from launcher.checkpoints import latest_complete_checkpoint, problem_with, set_aside

    resume, skipped = latest_complete_checkpoint(folder)
    if on_each_node:
        resume, newer = checkpoint_on_every_node(folder, resume, state)
        skipped = [*skipped, *newer]
    state.wait_for_everyone()  # every rank has chosen before anything is moved
    mover = state.is_local_main_process if on_each_node else state.is_main_process
    for skipped_folder in skipped:
        reason = problem_with(skipped_folder) or "not complete on every node"
        if mover:
            kept = set_aside(skipped_folder)
            print(
                f"[launcher] warning: skipping incomplete {skipped_folder.name} ({reason}); "
                f"kept as {kept}",
                flush=True,
            )
    state.wait_for_everyone()
    return resume


def checkpoint_on_every_node(
    folder: Path, newest: Path | None, state: Any
) -> tuple[Path | None, list[Path]]:
    """With node-local storage each node sees only its own disk: agree on the newest step that
    is complete everywhere, and return it with this node's newer ones (to set aside)."""
    import torch.distributed as dist

    from launcher.checkpoints import complete_checkpoints
    from launcher.contract import this_node

    mine = [checkpoint_step_of(p) for p in complete_checkpoints(folder)]
    everyone: list[Any] = [None] * state.num_processes
    if dist.is_available() and dist.is_initialized():
        dist.all_gather_object(everyone, (this_node(), mine))
    else:
        everyone = [(this_node(), mine)]
    common = set.intersection(*(set(steps) for _, steps in everyone))
    if not common and any(steps for _, steps in everyone):
        held = "; ".join(
            f"{node}: {steps or 'none'}"
            for node, steps in sorted(set((node, tuple(steps)) for node, steps in everyone))
        )
        raise LauncherError(
            f"node-local checkpoints disagree ({held}): no step is complete on every node of "
            "this attempt, so it runs on other nodes than the ones that saved. Checkpoints stay "
            "on the disks of the nodes that wrote them: resubmit on those nodes, or copy each "
            f"node's {folder.name} folders to every node; `--from-scratch` starts over."
        )
    step = max(common) if common else None
    chosen = folder / f"checkpoint-{step}" if step is not None else None
    return chosen, [folder / f"checkpoint-{s}" for s in mine if step is None or s > step]


def checkpoint_step_of(folder: Path) -> int:
    from launcher.checkpoints import checkpoint_step

    step = checkpoint_step(folder)
    assert step is not None
    return step


MODEL_FILE_SKIP = ("optimizer", "scheduler", "rng_state", "trainer_state", "training_args",
                   "launcher-complete", "zero_to_", "latest", "README")  # fmt: skip


def training_finished(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` is the last step of its run (killed before the final save)."""
    trainer_state = json.loads((checkpoint / "trainer_state.json").read_text())
    return 0 < trainer_state.get("max_steps", 0) <= trainer_state.get("global_step", 0)


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


def check_resume_world(recipe: Recipe, resume: Path | None, world_size: int, run_dir: Path) -> None:
    """ZeRO shards belong to the world size that wrote them: refuse another one before training.

    DDP checkpoints hold whole weights and optimizer states, so they load on any world size.
    """
    from launcher.checkpoints import read_manifest

    if resume is None or recipe.distributed.strategy != "deepspeed":
        return
    written_by = (read_manifest(resume) or {}).get("world_size", world_size)
    if written_by != world_size:
        raise LauncherError(
            f"{resume.name} holds DeepSpeed ZeRO-{recipe.distributed.zero_stage} shards written "
            f"by {written_by} ranks, but this run has {world_size}. The shards split optimizer "
            "states by rank, and a different world size cannot load them as they are. Either "
            f"run with {written_by} ranks again, or export the weights "
            f"(`launcher export {run_dir} -o DIR`) and start a new run from them "
            "(model.pretrained=DIR); the optimizer states start fresh then."
        )


def write_result(
    layout: RunLayout, step: int, resumed_from: Path | None, metrics: dict[str, Any]
) -> None:
    """``result.json``: the run finished; written last, by rank 0."""
    result = {
        "global_step": step,
        "model_dir": str(layout.model_dir),
        "resumed_from": str(resumed_from) if resumed_from else None,
        "final_metrics": metrics,
    }
    layout.result_file.write_text(json.dumps(result, indent=2) + "\n")


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
