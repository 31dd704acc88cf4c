"""Loading a config file: reading it, its YAML with line marks, and its one-line summary.

``load_config`` reports every problem at once as ``FILE: FIELD.PATH: message``, in the
order of the file. The file is read with ``files.read_regular``, up to a megabyte: a FIFO
or a device is refused rather than read (one would block, ``/dev/zero`` never ends).
PyYAML's safe loader is used in two steps, composing the node tree and then constructing
it, because ``yaml.safe_load`` keeps no positions and lets a duplicate key overwrite the
first silently: the tree gives each key and item its line and column (for sorting
problems, and for a missing field, the end of its mapping), and each duplicate key its path.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nfs_failover import files
from nfs_failover.config.models import Config
from nfs_failover.config.problems import (
    Loc,
    Position,
    Problem,
    describe,
    line,
    one_line,
    validation_problems,
)
from nfs_failover.config.values import Mode
from nfs_failover.durations import format_duration
from nfs_failover.errors import ConfigError

__all__ = ["MAX_FILE_BYTES", "load_config", "parse_config", "summary"]

MAX_FILE_BYTES = 1024 * 1024


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a config file.

    Raises ``ConfigError`` whose ``problems`` are one line each, ``FILE: FIELD: message``,
    where FILE is ``path`` as given; all problems found are reported at once, in file order.
    """
    source = str(path)
    try:
        raw = files.read_regular(Path(path), MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError([f"{source}: cannot read the file: {reason}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{source}: too large (more than {MAX_FILE_BYTES} bytes)"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (bad byte at offset {exc.start})"]) from None
    return parse_config(text, source)


def validate_config(data: dict[str, Any], source: str) -> Config:
    """A config from a mapping built in Python, whose values may be typed already (a
    ``timedelta`` for a duration, an ``Export``): the same checks and one-line problems as
    a file's, without line marks. Raises ``ConfigError``."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, data, lambda _loc: (0, 0))
        raise ConfigError([line(source, p) for p in problems]) from None
    config._source = source
    return config


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate config text; ``source`` names it in problem lines."""
    data, marks, problems = _parse_yaml(text, source)
    if data is None and not problems:
        raise ConfigError([f"{source}: the file is empty; expected a mapping with volumes"])
    if not isinstance(data, dict):
        if problems:
            raise ConfigError([line(source, p) for p in problems])
        kind = describe(data)
        raise ConfigError([f"{source}: expected a mapping of settings at the top, got {kind}"])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(exc, data, marks.position)
    if problems:
        problems.sort(key=lambda problem: problem.position)
        raise ConfigError([line(source, p) for p in problems])
    config._source = source
    return config


def summary(config: Config, source: str | Path | None = None) -> str:
    """One line describing the config, led by its file name when known.

    For example ``crr.yaml: 2 volumes (1 read-write, 1 read-only), 4 replicas, providers:
    anf, local; failover after 60s, max lag 20m`` (with ``, 1 group`` after the modes when
    the file has groups); a value that volumes override differently
    is shown as a range (``10s to 60s``).
    """
    name = str(source) if source is not None else config.source
    volumes = config.volumes
    modes = [
        f"{count} {mode.value}"
        for mode in Mode
        if (count := sum(volume.mode is mode for volume in volumes))
    ]
    providers = sorted({volume.replication.provider for volume in volumes})
    policies = [config.effective_policy(volume) for volume in volumes]
    replicas = sum(len(volume.replicas) for volume in volumes)
    grouped = f", {_count(len(config.groups), 'group')}" if config.groups else ""
    text = (
        f"{_count(len(volumes), 'volume')} ({', '.join(modes)}){grouped},"
        f" {_count(replicas, 'replica')},"
        f" {'provider' if len(providers) == 1 else 'providers'}: {', '.join(providers)};"
        f" failover after {_span(p.failover_after for p in policies)},"
        f" max lag {_span(p.max_lag for p in policies)}"
    )
    return f"{name}: {text}" if name else text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _span(values: Iterable[timedelta]) -> str:
    ordered = sorted(set(values))
    if len(ordered) == 1:
        return format_duration(ordered[0])
    return f"{format_duration(ordered[0])} to {format_duration(ordered[-1])}"


# -- YAML --------------------------------------------------------------------------------


class _Marks:
    """Where each key and item of the file starts, and where each mapping ends.

    Problems sort by these positions; a missing field sorts at the end of its mapping.
    """

    def __init__(self) -> None:
        self.starts: dict[Loc, Position] = {}
        self.ends: dict[Loc, Position] = {}

    def position(self, loc: Loc) -> Position:
        if loc not in self.starts and loc[:-1] in self.ends:
            return self.ends[loc[:-1]]
        for length in range(len(loc), -1, -1):
            if loc[:length] in self.starts:
                return self.starts[loc[:length]]
        return (0, 0)


def _parse_yaml(text: str, source: str) -> tuple[object, _Marks, list[Problem]]:
    """The data, the positions of its parts, and duplicate-key problems.

    Raises ``ConfigError`` for text that is not YAML. Duplicate keys are found on the
    composed node tree rather than while constructing, so each is reported with its path.
    """
    marks = _Marks()
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, marks, []
        problems: list[Problem] = []
        marks.starts[()] = _position(node.start_mark)
        _walk(node, (), marks, problems, set())
        return loader.construct_document(node), marks, problems
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(source, exc)]) from None
    except yaml.reader.ReaderError as exc:
        detail = f"unacceptable character #x{exc.character:04x} at offset {exc.position}"
        raise ConfigError([f"{source}: invalid YAML: {detail}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {one_line(str(exc))}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: invalid YAML: nested too deeply"]) from None
    except (ValueError, OverflowError) as exc:  # a number Python refuses (4,300+ digits)
        raise ConfigError([f"{source}: invalid YAML: {one_line(str(exc))[:200]}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(source: str, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    what = one_line(exc.problem or exc.context or "cannot parse")
    if exc.context and what.startswith("but "):
        what = f"{one_line(exc.context)}, {what}"
    if mark is None:
        return f"{source}: invalid YAML: {what}"
    return f"{source}: {mark.line + 1}:{mark.column + 1}: invalid YAML: {what}"


def _position(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


def _walk(
    node: yaml.Node, loc: Loc, marks: _Marks, problems: list[Problem], seen: set[int]
) -> None:
    # Aliases share nodes: walk each once, so a "billion laughs" file stays cheap.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            marks.starts.setdefault((*loc, index), _position(item.start_mark))
            _walk(item, (*loc, index), marks, problems, seen)
    elif isinstance(node, yaml.MappingNode):
        marks.ends.setdefault(loc, _position(node.end_mark))
        keys: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = key_node.value
            where = _position(key_node.start_mark)
            if key in keys:
                text = f"duplicate key (first on line {keys[key][0]})"
                problems.append(Problem(where, (*loc, key), text))
                continue
            keys[key] = where
            marks.starts.setdefault((*loc, key), where)
            _walk(value_node, (*loc, key), marks, problems, seen)
