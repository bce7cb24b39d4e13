"""YAML as plain data: the safe loader, with the two fixes recipes need.

- Floats the way users write them: PyYAML follows YAML 1.1, where ``1e-6`` (no dot) is a string;
  YAML 1.2 (and every user) reads it as a number.
- A key given twice in one mapping is an error, not a silent "last one wins" that drops a whole
  section.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping; ``key`` and ``line`` (1-based) say which and where."""

    def __init__(self, key: Any, mark: yaml.Mark):
        super().__init__(None, None, f"duplicate key {key!r}", mark)
        self.key, self.line = key, mark.line + 1


class RecipeYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no Python tags, nothing executed) plus YAML 1.2 floats and no duplicates."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKeyError(key, key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


RecipeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789.")
)


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=RecipeYamlLoader)  # noqa: S506 - a SafeLoader subclass
