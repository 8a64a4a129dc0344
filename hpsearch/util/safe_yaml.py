"""Reading YAML files that may be hostile or mistaken: study files and trial configs.

``yaml.safe_load`` builds no arbitrary objects, but it reads a file of any size,
lets nested aliases (a "billion laughs" file) expand into more values than memory
holds once anything walks them, and keeps the last of two equal keys without a
word. :func:`load_yaml_file` bounds the first two and refuses the third; every
refusal is a :class:`~hpsearch.errors.ConfigError` that names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from hpsearch.errors import ConfigError, short_repr

#: the largest file read, in bytes (the study files here are about 1 KB)
MAX_BYTES = 1024 * 1024
#: the most values (scalars, lists, mappings) a document may hold with every alias expanded
MAX_NODES = 100_000
#: the most alias uses (``*name``) in a document
MAX_ALIASES = 100


class _Refused(Exception):
    """A bound or rule of :func:`load_yaml_file` broken; becomes a ConfigError naming the file."""


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts alias uses and refuses duplicate mapping keys."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                line = self.peek_event().start_mark.line + 1
                raise _Refused(
                    f"more than {MAX_ALIASES} YAML aliases (*name), the last at line {line}; "
                    "write the values out"
                )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *base, may be overridden
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML refuses it itself
                    continue
                if first is not None:
                    raise _Refused(
                        f"duplicate key {short_repr(key, limit=40)} at line {line} "
                        f"(first at line {first})"
                    )
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expanded_size(root: yaml.Node, aliases: int) -> None:
    """Refuse a document of more than MAX_NODES values with its aliases expanded, or a cycle.

    An alias is one node shared by several parents, so each node's expanded size is counted
    once and reused: a billion-laughs file is refused after a few hundred steps.
    """
    sizes: dict[int, int] = {}
    stack = [(root, _children(root))]  # depth-first, iterative: no recursion limit
    totals = [1]
    on_path = {id(root)}
    while stack:
        node, todo = stack[-1]
        if todo:
            child = todo.pop()
            if id(child) in on_path:
                line = child.start_mark.line + 1
                raise _Refused(f"a YAML alias refers to a node that contains it (line {line})")
            if id(child) not in sizes:
                stack.append((child, _children(child)))
                totals.append(1)
                on_path.add(id(child))
                continue
            totals[-1] += sizes[id(child)]
        else:
            stack.pop()
            on_path.discard(id(node))
            sizes[id(node)] = size = totals.pop()
            if totals:
                totals[-1] += size
        if totals and totals[-1] > MAX_NODES:
            if aliases:
                raise _Refused(
                    f"more than {MAX_NODES} values once its aliases (*name) are expanded; "
                    "write the values out instead of nesting aliases"
                )
            raise _Refused(f"more than {MAX_NODES} values; is this the right file?")


def load_yaml_file(path: str | Path, what: str = "file") -> Any:
    """Read one YAML document from ``path``, within MAX_BYTES, MAX_NODES and MAX_ALIASES.

    ``what`` names the file in messages (``study file``, ``config file``). Raises
    :class:`ConfigError` naming the file when it is missing, unreadable, too large, not
    UTF-8, not valid YAML, expands too far through aliases or repeats a key in a mapping.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(
            f"{path}: {what} larger than {_size(MAX_BYTES)} ({MAX_BYTES} bytes); "
            "is this the right file?"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    loader = _BoundedLoader(text)
    loader.name = str(path)  # PyYAML's marks name the file, not "<unicode string>"
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expanded_size(root, loader.alias_count)
        return loader.construct_document(root)
    except _Refused as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.MarkedYAMLError as error:  # one line: what, where
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = "; ".join(p for p in (error.context, error.problem) if p)
        problem = problem if len(problem) <= 200 else problem[:200] + "…"
        raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    except ValueError as error:  # an integer of more than 4300 digits, a date 2024-13-45...
        reason = str(error).split(";")[0][:200]
        raise ConfigError(f"{path}: a value YAML cannot read: {reason}") from None
    finally:
        loader.dispose()


def _size(count: int) -> str:
    """1048576 -> '1 MiB'."""
    for unit, factor in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= factor and count % factor == 0:
            return f"{count // factor} {unit}"
    return f"{count} bytes"
