"""``launcher recipes``."""

from __future__ import annotations


def recipes() -> int:
    """List the shipped recipes."""
    import yaml

    from launcher.recipe.loader import SHIPPED_RECIPES

    for path in sorted(SHIPPED_RECIPES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        print(f"{path.stem:<28} {data.get('description', '')}")
    return 0
