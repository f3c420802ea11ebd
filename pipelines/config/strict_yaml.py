"""Strict YAML for configs: PyYAML's safe loader without YAML's lenient corners.

A key given twice is an error naming both lines; dates stay text (pydantic reads
them and names the key of a bad one); a document whose aliases expand past
``MAX_CONFIG_VALUES`` values (an alias bomb) is refused before anything walks it.
Every error is a ``ConfigError`` naming the source and echoing at most
``MAX_ECHO`` characters of what it was given. Used by ``pipelines.config``.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

from pipelines.common.errors import ConfigError

# A config has about a hundred values; far more means aliases that multiply (an alias bomb).
MAX_CONFIG_VALUES = 10_000
# Characters of a user's input echoed in an error message.
MAX_ECHO = 200


def echo(value: Any, limit: int = MAX_ECHO) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error stays short whatever the input."""
    shorter = reprlib.Repr()
    shorter.maxstring = shorter.maxother = limit
    shorter.maxlevel, shorter.maxlist, shorter.maxdict = 3, 8, 8
    text = shorter.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, made strict: no duplicate keys, no implicit dates."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {echo(key)} is given twice (first on line {seen[key] + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# Dates stay text: pydantic then reads them with an error that names the key.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _expanded_values(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values ``node`` stands for once every alias is expanded."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise yaml.YAMLError("an alias refers to the mapping or list that contains it")
    open_nodes.add(id(node))
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = []
    for child in children:
        total += _expanded_values(child, sizes, open_nodes)
        if total > MAX_CONFIG_VALUES:
            break
    open_nodes.discard(id(node))
    sizes[id(node)] = total
    return total


def parse_yaml(text: str, source: str) -> Any:
    """One YAML document read strictly; ``ConfigError`` naming ``source`` if it is not valid."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_values(node, {}, set()) > MAX_CONFIG_VALUES:
            raise ConfigError(
                f"{source}: its aliases expand to more than {MAX_CONFIG_VALUES:,} values; "
                "a config needs far fewer (write the values out, or use fewer aliases)"
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        what = echo(err.problem or err.context or "", MAX_ECHO).strip("'\"")
        raise ConfigError(f"{source}: not valid YAML: {what}{where}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {echo(str(err)).strip(chr(39))}") from None
    finally:
        loader.dispose()
