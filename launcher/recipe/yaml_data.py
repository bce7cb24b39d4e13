"""YAML as plain data: the safe loader, with the fixes and limits recipes need.

- Floats and booleans the way users write them: PyYAML follows YAML 1.1, where ``1e-6`` (no dot)
  is a string and ``no`` is False; YAML 1.2 (and every user) reads a number and the text `no`. A lone ``=`` is text, not YAML 1.1's "value" tag.
- Only plain data: mappings, lists, text, numbers, booleans, null (and dates). Every other tag is
  refused before anything is constructed: ``!!python/...`` tags would import or run code, and
  ``!!binary``, ``!!set`` or custom ``!tags`` give values no recipe field takes.
- A key given twice in one mapping is an error, not a silent "last one wins" that drops a whole
  section.
- Bounded work. Anchors and aliases share one node, so nine levels of ten aliases (the "billion
  laughs") compose to a hundred nodes but would expand to 10^9 values in whatever walks the data
  next (the schema, the plan's dump). The composer counts the values a document *expands* to and
  stops at :data:`MAX_VALUES`; an alias inside its own anchor (an endless structure) is refused;
  nesting stops at :data:`MAX_DEPTH` levels, before PyYAML's recursive composer hits Python's
  recursion limit. The loader refuses files over :data:`MAX_BYTES` before parsing them at all.

Every problem comes out as a :class:`YamlProblem` that says *where*: the key path of the value at
fault when it has one, else ``line L, column C``, else :data:`WHOLE_FILE`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from launcher.errors import WHOLE_FILE, first_line

# A recipe is a few KB; these limits are orders of magnitude above any sane one and far below
# what would take noticeable time or memory.
MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 100  # nested mappings/lists; the shipped recipes use 4
# Values once every alias is expanded; the shipped recipes have under 200. PyYAML's pure-Python
# parser handles some 10-30 thousand values a second, so a dense file is refused within a second.
MAX_VALUES = 10_000

YAML12_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)

YAML_TAG = "tag:yaml.org,2002:"
PLAIN_TAGS = frozenset(
    YAML_TAG + name
    for name in ("str", "int", "float", "bool", "null", "seq", "map", "merge", "timestamp")
)


class YamlProblem(Exception):
    """Why a YAML text is not recipe data, and where: a key path, ``line L, column C``, or
    :data:`WHOLE_FILE`. ``refused`` is True for what parses but is not allowed (tags, limits,
    duplicate keys) and False for text that is not YAML at all."""

    def __init__(self, where: str, message: str, refused: bool = True):
        super().__init__(f"{where}: {message}")
        self.where, self.message, self.refused = where, message, refused


def position(mark: yaml.Mark | None) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else WHOLE_FILE


def text_position(text: str, index: int) -> str:
    """``line L, column C`` of a character index (PyYAML's reader reports only the index)."""
    line_start = text.rfind("\n", 0, index) + 1
    return f"line {text.count(chr(10), 0, index) + 1}, column {index - line_start + 1}"


class RecipeYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus YAML 1.2 floats and a composer that counts what it builds."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0
        self.expanded = 0  # values of the document so far, each alias counted as what it names
        self.sizes: dict[int, int] = {}  # id(node) -> values it expands to
        self.open_anchors: list[str] = []

    # The scanner looks ahead for keys at every open flow level, so 10,000 nested `[` cost it
    # seconds before the composer sees a node: stop it at the same depth limit.
    def fetch_flow_collection_start(self, token_class: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise too_deep(self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def add_indent(self, column: int) -> bool:
        if len(self.indents) >= MAX_DEPTH:
            raise too_deep(self.get_mark())
        return super().add_indent(column)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self.open_anchors:
                raise YamlProblem(
                    position(event.start_mark),
                    f"alias *{event.anchor} is inside its own anchor &{event.anchor}: "
                    "that is an endless structure",
                )
            node = super().compose_node(parent, index)
            self.count(self.sizes.get(id(node), 1), event.start_mark)
            return node
        if self.depth >= MAX_DEPTH:
            raise too_deep(event.start_mark)
        self.depth += 1
        self.open_anchors.append(event.anchor)
        before = self.expanded
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open_anchors.pop()
        self.count(1, event.start_mark)
        self.sizes[id(node)] = self.expanded - before
        return node

    def count(self, values: int, mark: yaml.Mark) -> None:
        self.expanded += values
        if self.expanded > MAX_VALUES:
            raise YamlProblem(
                WHOLE_FILE,
                f"expands to more than {MAX_VALUES:,} values (anchors and aliases counted "
                f"as what they repeat; the limit was passed at {position(mark)}); "
                "a recipe has a few hundred",
            )


def too_deep(mark: yaml.Mark) -> YamlProblem:
    return YamlProblem(
        position(mark), f"nested deeper than {MAX_DEPTH} levels; a recipe needs a handful"
    )


RecipeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789.")
)
# YAML 1.2 booleans: only true and false. YAML 1.1 also reads yes/no/on/off/y/n as booleans, so
# `checkpointing.strategy: no` (a documented value) arrived as False and was refused.
for first in "yYnNoOtTfF":
    RecipeYamlLoader.yaml_implicit_resolvers[first] = [
        (tag, regexp)
        for tag, regexp in RecipeYamlLoader.yaml_implicit_resolvers.get(first, [])
        if tag != YAML_TAG + "bool"
    ]
RecipeYamlLoader.add_implicit_resolver(
    YAML_TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.1's `=` ("value" tag) has no constructor in the safe loader: keep it as text.
RecipeYamlLoader.yaml_implicit_resolvers["="] = [
    (tag, regexp)
    for tag, regexp in RecipeYamlLoader.yaml_implicit_resolvers.get("=", [])
    if tag != YAML_TAG + "value"
]


def load_yaml(text: str) -> Any:
    """Parse ``text`` as plain recipe data; raise :class:`YamlProblem` saying why and where not."""
    if len(text) > MAX_BYTES:
        raise YamlProblem(WHOLE_FILE, f"longer than {MAX_BYTES:,} characters")
    control = yaml.reader.Reader.NON_PRINTABLE.search(text)
    if control:
        # PyYAML's reader would report a bare character index; say the line and column.
        raise YamlProblem(
            text_position(text, control.start()),
            f"invalid YAML: control character U+{ord(control.group()):04X} is not allowed",
            refused=False,
        )
    loader = RecipeYamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_plain_data(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "not valid YAML"
        if error.context and problem.startswith("but "):  # "expected a single document ..."
            problem = f"{error.context}, {problem}"
        raise YamlProblem(position(mark), f"invalid YAML: {problem}", refused=False) from None
    except yaml.YAMLError as error:
        raise YamlProblem(WHOLE_FILE, f"invalid YAML: {first_line(error)}", refused=False) from None
    finally:
        loader.dispose()


def check_plain_data(root: Node) -> None:
    """Refuse tags that are not plain data and keys given twice, naming the key path of each.

    Runs on the composed nodes, before any value is constructed; each node is visited once even
    when aliases reach it many times (the composer has already bounded the depth)."""
    seen: set[int] = set()

    def visit(node: Node, path: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if node.tag not in PLAIN_TAGS:
            raise YamlProblem(path or WHOLE_FILE, tag_message(node))
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                visit(item, join(path, str(index)))
        elif isinstance(node, MappingNode):
            first: dict[str, yaml.Mark] = {}
            for key_node, value_node in node.value:
                name = key_node.value if isinstance(key_node, ScalarNode) else "?"
                child = join(path, name)
                if isinstance(key_node, ScalarNode) and key_node.tag != YAML_TAG + "merge":
                    if name in first:
                        raise YamlProblem(
                            child,
                            f"given twice ({position(first[name])}, again at "
                            f"{position(key_node.start_mark)}); a later one would silently win",
                        )
                    first[name] = key_node.start_mark
                visit(key_node, child)
                visit(value_node, child)

    visit(root, "")


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def tag_message(node: Node) -> str:
    tag = node.tag
    short = "!!" + tag[len(YAML_TAG) :] if tag.startswith(YAML_TAG) else tag
    where = f" ({position(node.start_mark)})"
    if tag.startswith(YAML_TAG + "python/"):
        return (
            f"the Python-specific tag {short} is refused{where}: a recipe is plain data, and "
            "this tag would import or run code"
        )
    return (
        f"the tag {short} is refused{where}: a recipe holds only mappings, lists, text, numbers "
        "and booleans"
    )
