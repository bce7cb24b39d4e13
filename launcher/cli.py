"""The ``launcher`` command line.

Login nodes are slow and shared, so this module and everything ``--help``, ``plan`` and ``recipes``
touch import no torch, transformers, deepspeed or bitsandbytes; commands that train import their
heavy parts inside their handler.

    launcher recipes
    launcher plan recipes/sft-mistral.yaml training.learning_rate=2e-4 --smoke
    launcher run recipes/sft-mistral.yaml --smoke
    launcher tokenizer recipes/mlm-scratch.yaml -o my-tokenizer
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from launcher.errors import LauncherError

SHIPPED_RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launcher",
        description="Resolve a YAML training recipe into a checked plan and run it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    recipes = commands.add_parser("recipes", help="list the shipped recipes")
    recipes.set_defaults(handler=cmd_recipes)

    plan = commands.add_parser("plan", help="resolve a recipe and print the plan")
    add_recipe_arguments(plan)
    plan.add_argument("-o", "--output", type=Path, help="also write the plan's files here")
    plan.set_defaults(handler=cmd_plan)

    run = commands.add_parser("run", help="resolve, then train on this machine")
    add_recipe_arguments(run)
    run.set_defaults(handler=cmd_run)

    tokenizer = commands.add_parser("tokenizer", help="train or adjust the recipe's tokenizer")
    add_recipe_arguments(tokenizer, run_dir=False)
    tokenizer.add_argument("-o", "--output", type=Path, required=True, help="folder to save it in")
    tokenizer.set_defaults(handler=cmd_tokenizer)
    return parser


def add_recipe_arguments(parser: argparse.ArgumentParser, run_dir: bool = True) -> None:
    parser.add_argument("recipe", help="recipe file, or the name of a shipped recipe")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. training.max_steps=10"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny, offline, CPU-sized version")
    if run_dir:
        parser.add_argument("--run-dir", type=Path, help="run directory (default: runs/NAME)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (`run r.yaml --smoke a.b=1`), which argparse leaves unparsed.
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.handler(args) or 0)
    except LauncherError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def cmd_recipes(args: argparse.Namespace) -> int:
    import yaml

    for path in sorted(SHIPPED_RECIPES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        print(f"{path.stem:<28} {data.get('description', '')}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from launcher.backends.prepare import write_files

    plan = resolve(args)
    print(plan.summary())
    if args.output:
        write_files({args.output / path.name: text for path, text in plan.files().items()})
        print(f"\nplan files written to {args.output}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from launcher.backends.local import run_locally

    return run_locally(resolve(args))


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


def resolve(args: argparse.Namespace):  # -> Plan (its import is deferred with the command)
    from launcher.plan.build import build_plan
    from launcher.recipe.loader import display_path, load_recipe

    path = find_recipe(args.recipe)
    recipe = load_recipe(path, args.overrides)
    run_dir = args.run_dir or Path("runs") / (recipe.name + ("-smoke" if args.smoke else ""))
    return build_plan(
        recipe,
        run_dir,
        source=display_path(path),
        overrides=tuple(args.overrides),
        smoke=args.smoke,
    )


def find_recipe(name: str) -> Path:
    """A recipe path as given, or the shipped recipe of that name."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    shipped = SHIPPED_RECIPES / f"{name}.yaml"
    return shipped if shipped.exists() else path
