"""The ``launcher`` command line.

Login nodes are slow and shared, so this module and everything ``--help``, ``plan`` and ``recipes``
touch import no torch, transformers, deepspeed or bitsandbytes; commands that train import their
heavy parts inside their handler.

    launcher recipes
    launcher plan recipes/sft-mistral.yaml training.learning_rate=2e-4 --smoke
    launcher run recipes/sft-mistral.yaml --smoke
    launcher tokenizer recipes/mlm-scratch.yaml -o my-tokenizer
    launcher submit recipes/sft-mistral.yaml --cluster dev --nodes 2 --smoke
    launcher status runs/sft-mistral-smoke
    launcher plot runs/sft-mistral-smoke -o loss.png
    launcher doctor
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from launcher.errors import LauncherError

SHIPPED_RECIPES = Path(__file__).resolve().parent.parent / "recipes"
AddArguments = Callable[[argparse.ArgumentParser], None]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line; with ``only``, just that command's part of it.

    Each subcommand's parser costs argparse a formatter per argument and gettext a locale lookup
    (file system probes) per message: building all twelve took 10-40 ms on a busy login node,
    up to a tenth of ``launcher plan`` (benchmarks/RESULTS.md). A command line that names its
    command needs only that one's parser.
    """
    parser = argparse.ArgumentParser(
        prog="launcher",
        description="Resolve a YAML training recipe into a checked plan and run it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments) in COMMANDS.items():
        if only is None or name == only:
            add_arguments(commands.add_parser(name, help=help_text))
    return parser


def recipes_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(handler=cmd_recipes)


def plan_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    add_cluster_arguments(parser, required=False)
    parser.add_argument("-o", "--output", type=Path, help="also write the plan's files here")
    parser.set_defaults(handler=cmd_plan)


def run_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    add_from_scratch(parser)
    parser.set_defaults(handler=cmd_run)


def submit_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    add_from_scratch(parser)
    add_cluster_arguments(parser, required=True)
    parser.add_argument("--dry-run", action="store_true", help="print the batch script only")
    parser.set_defaults(handler=cmd_submit)


def sbatch_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser)
    add_from_scratch(parser)
    add_cluster_arguments(parser, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True, help="the script to write")
    parser.set_defaults(handler=cmd_sbatch)


def target_arguments(handler: Callable[[argparse.Namespace], int]) -> AddArguments:
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("target", help="run directory or job id")
        parser.set_defaults(handler=handler)

    return add


def logs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="run directory or job id")
    parser.add_argument("--rank", type=int, default=0, help="global rank (default 0)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing while it runs")
    parser.set_defaults(handler=cmd_logs)


def export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory")
    parser.add_argument(
        "--checkpoint",
        type=int,
        metavar="STEP",
        help="step to export (default: the newest complete checkpoint)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="folder to create (new or empty)"
    )
    parser.set_defaults(handler=cmd_export)


def tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    add_recipe_arguments(parser, run_dir=False)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to save it in")
    parser.set_defaults(handler=cmd_tokenizer)


def doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where runs go (free disk is checked)"
    )
    parser.add_argument(
        "--skip-launch", action="store_true", help="skip the two-rank all-reduce (faster)"
    )
    parser.set_defaults(handler=cmd_doctor)


def plot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="run directory")
    parser.add_argument(
        "-o", "--output", type=Path, help="image to write (default: RUN_DIR/metrics.png)"
    )
    parser.set_defaults(handler=cmd_plot)


def add_recipe_arguments(parser: argparse.ArgumentParser, run_dir: bool = True) -> None:
    parser.add_argument("recipe", help="recipe file, or the name of a shipped recipe")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. training.max_steps=10"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny, offline, CPU-sized version")
    if run_dir:
        parser.add_argument("--run-dir", type=Path, help="run directory (default: runs/NAME)")


def add_from_scratch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="start over: an existing run directory is renamed aside, not resumed",
    )


def add_cluster_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--cluster",
        required=required,
        metavar="PROFILE",
        help="cluster profile (cluster/NAME.yaml)",
    )
    parser.add_argument(
        "--nodes", type=int, help="nodes (default: the recipe's, else the profile's)"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else None)
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`run r.yaml --smoke a.b=1`), which argparse leaves unparsed.
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    skip_pydantic_plugins()
    try:
        return int(args.handler(args) or 0)
    except LauncherError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def skip_pydantic_plugins() -> None:
    """Spare every command pydantic's plugin search, which the recipe schema has no use for.

    The first model class pydantic builds looks for plugins in the entry points of every
    installed distribution (about 80 in a training environment); skipping that search made
    ``launcher plan`` about 2% faster. A value the user set (a list of plugins to skip) is kept.
    The ranks inherit the setting and skip the search too.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    for path in sorted(SHIPPED_RECIPES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        print(f"{path.stem:<28} {data.get('description', '')}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    plan = resolve(args)
    print(plan.summary())
    if args.cluster:
        from launcher.backends.slurm import batch_script

        print(
            f"\nbatch script for cluster {args.profile.name}:\n{batch_script(plan, args.profile)}"
        )
    if args.output:
        from launcher.backends.run_dir import write_files

        write_files({args.output / path.name: text for path, text in plan.files().items()})
        print(f"\nplan files written to {args.output}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from launcher.backends.local import run_locally

    return run_locally(resolve(args), from_scratch=args.from_scratch)


def cmd_submit(args: argparse.Namespace) -> int:
    from launcher.backends import slurm

    plan = resolve(args)
    if args.dry_run:
        print(plan.summary())
        print(f"\nbatch script:\n{slurm.batch_script(plan, args.profile)}")
        return 0
    job_id = slurm.submit(plan, args.profile, from_scratch=args.from_scratch)
    print(
        f"submitted job {job_id} to {args.profile.name}: {plan.batch.nodes} node(s) x "
        f"{plan.batch.processes_per_node} rank(s)"
    )
    print(f"run dir: {plan.layout.root}")
    print(f"watch:   launcher status {shlex.quote(str(plan.layout.root))}")
    return 0


def cmd_sbatch(args: argparse.Namespace) -> int:
    from launcher.backends.run_dir import write_files
    from launcher.backends.slurm import prepare_cluster_run, standalone_batch_script

    plan = resolve(args)
    script = standalone_batch_script(plan, args.profile)  # refusals come before the run dir exists
    prepare_cluster_run(plan, from_scratch=args.from_scratch)
    write_files({args.output: script})
    args.output.chmod(0o755)
    print(f"run dir prepared: {plan.layout.root}")
    print(f"submit it with:   sbatch {shlex.quote(str(args.output))}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from launcher.backends.jobs import locate, status_report

    print(status_report(*locate(args.target)))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from launcher.backends.jobs import locate, show_log

    layout, job_id = locate(args.target)
    show_log(layout, args.rank, args.follow, job_id)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from launcher.backends.jobs import cancel, locate

    print(cancel(*locate(args.target)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from launcher.export import cli_export

    return cli_export(args)


def cmd_tokenizer(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from launcher.ranks.tokenizer_stage import build_and_save_tokenizer

    args.run_dir = Path(tempfile.mkdtemp(prefix="launcher-tokenizer-"))
    try:
        build_and_save_tokenizer(resolve(args), args.output)
    finally:
        shutil.rmtree(args.run_dir, ignore_errors=True)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from launcher.doctor import cli_doctor

    return cli_doctor(args)


def cmd_plot(args: argparse.Namespace) -> int:
    from launcher.plot import cli_plot

    return cli_plot(args)


# Each command: its one-line help and what adds its arguments (and handler) to its parser.
COMMANDS: dict[str, tuple[str, AddArguments]] = {
    "recipes": ("list the shipped recipes", recipes_arguments),
    "plan": ("resolve a recipe and print the plan", plan_arguments),
    "run": ("resolve, then train on this machine", run_arguments),
    "submit": ("resolve, then submit to SLURM and return", submit_arguments),
    "sbatch": ("write a batch script to submit with sbatch", sbatch_arguments),
    "status": ("a cluster run's state, attempts and failures", target_arguments(cmd_status)),
    "logs": ("print a rank's log", logs_arguments),
    "cancel": ("cancel a cluster run's job", target_arguments(cmd_cancel)),
    "export": (
        "write a checkpoint (DDP or ZeRO shards) as one Hugging Face model folder",
        export_arguments,
    ),
    "tokenizer": ("train or adjust the recipe's tokenizer", tokenizer_arguments),
    "doctor": (
        "report versions, GPUs, SLURM, disk, and test a two-rank all-reduce",
        doctor_arguments,
    ),
    "plot": ("draw loss, learning rate and throughput of a run as a PNG", plot_arguments),
}


def resolve(args: argparse.Namespace):  # -> Plan (its import is deferred with the command)
    from launcher.plan.build import build_plan
    from launcher.recipe.loader import display_path, find_yaml, load_recipe

    path = find_yaml(args.recipe, SHIPPED_RECIPES)
    overrides = list(args.overrides)
    recipe = load_recipe(path, overrides)
    if getattr(args, "cluster", None):
        from launcher.backends.profile import load_profile
        from launcher.backends.slurm import cluster_overrides

        args.profile = load_profile(args.cluster)
        # The cluster's values go first, so that the user's own overrides still win.
        overrides = cluster_overrides(recipe, args.profile, args.nodes) + overrides
        recipe = load_recipe(path, overrides)
    run_dir = args.run_dir or Path("runs") / (recipe.name + ("-smoke" if args.smoke else ""))
    return build_plan(
        recipe,
        run_dir,
        source=display_path(path),
        overrides=tuple(overrides),
        smoke=args.smoke,
    )
