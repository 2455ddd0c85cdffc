"""Config YAML read strictly: a duplicated key, an alias that expands past a small size and
a document nested too deeply are errors with a line number, as a syntax error is.

PyYAML's ``safe_load`` keeps the last of two equal keys (a second ``collect:`` silently
replaces the first) and expands aliases without bound (a few hundred bytes can stand for
billions of nodes). A config is a few hundred nodes; ``MAX_NODES`` leaves ample room.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from rlmec_core.errors import InputError

MAX_NODES = 10_000  # nodes of the document with every alias expanded
_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(InputError, ValueError):
    """Text that is not a usable YAML document; ``line`` is 1-based when known."""

    def __init__(self, line: int | None, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def clip(text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters: error messages never quote a whole input."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        # Only a mapping's own keys can clash; merged (<<) keys may be overridden.
        first_line: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = (key_node.tag, key_node.value)
            if key in first_line:
                raise YamlInputError(
                    key_node.start_mark.line + 1,
                    f"duplicate key {clip(key_node.value, 60)!r} "
                    f"(first at line {first_line[key]}); keep one",
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _check_size(root: Node) -> None:
    """Refuse a document whose aliases expand past MAX_NODES nodes, or refer to themselves."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise YamlInputError(node.start_mark.line + 1, "an alias refers to itself")
        open_nodes.add(key)
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise YamlInputError(
                    node.start_mark.line + 1,
                    f"aliases expand to more than {MAX_NODES} values; write it out or "
                    "use fewer aliases",
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root)


def load_yaml(text: str) -> Any:
    """The one document in ``text``, or None when it is empty; YamlInputError otherwise."""
    loader = None
    try:
        loader = _StrictLoader(text)  # checks every character first
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise YamlInputError(mark.line + 1 if mark else None, f"not valid YAML: {reason}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        reason = f"not valid YAML: unacceptable character #x{exc.character:04x}"
        raise YamlInputError(line, reason) from None
    except yaml.YAMLError as exc:
        raise YamlInputError(None, f"not valid YAML: {clip(str(exc), 200)}") from None
    except RecursionError:
        raise YamlInputError(None, "nested too deeply to be a config") from None
    finally:
        if loader is not None:
            loader.dispose()
