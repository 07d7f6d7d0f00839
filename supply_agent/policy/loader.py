"""Loading a directory of playbooks: YAML parsed with the line of every key, each file validated, and
every error reported as ``FILE:LINE: FIELD: MESSAGE``.

It exists because an operator fixing a playbook at 3 a.m. should get the whole list at once, each entry
pointing at the line to change: a check reports every error in every file, never only the first, and
translates pydantic's errors into the YAML author's terms (did-you-mean for unknown fields and checks).
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from supply_agent.policy.conditions import CHECKS
from supply_agent.policy.limits import GlobalLimits
from supply_agent.policy.playbook import Playbook
from supply_agent.policy.playbook_set import PlaybookSet
from supply_agent.policy.steps import VERIFY_KEYS, Verify

GLOBAL_FILE = "_global.yaml"


@dataclass(frozen=True, order=True)
class PlaybookError:
    """One problem in one file: ``FILE:LINE: FIELD: MESSAGE``. ``line`` is 1-based; 0 means the file as
    a whole."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class PlaybookSetError(ValueError):
    """`load_playbooks` found errors; ``errors`` holds every one of them."""

    def __init__(self, errors: Sequence[PlaybookError]) -> None:
        self.errors = list(errors)
        lines = "\n".join(str(e) for e in self.errors)
        super().__init__(f"{len(self.errors)} playbook error(s):\n{lines}")


@dataclass
class _Pos:
    """Where a YAML value is: the line of its key (or of the item, in a sequence), and its children."""

    line: int
    children: dict[str | int, _Pos] | None = None  # None for a scalar


def _index(
    node: yaml.Node, line: int, errors: list[tuple[int, str, str]], path: str, stack: tuple[int, ...] = ()
) -> _Pos:
    if id(node) in stack:  # a recursive alias
        return _Pos(line)
    stack = (*stack, id(node))
    if isinstance(node, yaml.MappingNode):
        children: dict[str | int, _Pos] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = str(key_node.value)
            key_line = key_node.start_mark.line + 1
            if key in children and key != "<<":
                errors.append(
                    (key_line, _join(path, key), f"duplicate key (first at line {children[key].line})")
                )
            children[key] = _index(value_node, key_line, errors, _join(path, key), stack)
        return _Pos(line, children)
    if isinstance(node, yaml.SequenceNode):
        items: dict[str | int, _Pos] = {
            i: _index(item, item.start_mark.line + 1, errors, _join(path, i), stack)
            for i, item in enumerate(node.value)
        }
        return _Pos(line, items)
    return _Pos(line)


def _join(path: str, el: str | int) -> str:
    if isinstance(el, int):
        return f"{path}[{el}]"
    part = el if re.fullmatch(r"[A-Za-z0-9_-]+", el) else repr(el)
    return f"{path}.{part}" if path else part


def _resolve(tree: _Pos, loc: Sequence[str | int], trailing: bool) -> tuple[int, str]:
    """The line and the dotted field for a pydantic location. Elements the YAML does not have (union tags,
    the wrapped ``condition`` of a flat ``verify``, index 0 of a single ``match`` mapping) are skipped;
    the last one is kept in the field name when ``trailing`` (a missing field)."""
    node, line, path = tree, tree.line, ""
    for i, el in enumerate(loc):
        child = None
        if node.children is not None:
            key: str | int = el if isinstance(el, int) else str(el)
            child = node.children.get(key)
            if child is None and isinstance(el, int):
                child = node.children.get(str(el))
        if child is not None:
            node, line, path = child, child.line, _join(path, el)
        elif trailing and i == len(loc) - 1 and isinstance(el, str):
            path = _join(path, el)
    return line, path or "<root>"


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    """The field names a YAML author may write at ``loc`` (for did-you-mean), or None when unknown."""
    tp: Any = model
    extra: list[str] = []
    for el in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if origin in (Union, types.UnionType):
            members = [_unwrap(a) for a in get_args(tp) if a is not type(None)]
            tagged = [
                m
                for m in members
                if isinstance(m, type)
                and issubclass(m, BaseModel)
                and "check" in m.model_fields
                and get_args(m.model_fields["check"].annotation) == (el,)
            ]
            if tagged:
                tp = tagged[0]
                continue
            if len(members) != 1:
                return None
            tp = members[0]
            origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if isinstance(el, str) and el in tp.model_fields:
                extra = list(VERIFY_KEYS) if tp is Verify and el == "condition" else []
                tp = tp.model_fields[el].annotation
                continue
            return None
        if origin is list and isinstance(el, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        members = [_unwrap(a) for a in get_args(tp) if a is not type(None)]
        tp = members[0] if len(members) == 1 else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [*tp.model_fields, *extra]
    return None


def _message(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    kind, msg, loc = err["type"], str(err["msg"]), tuple(err["loc"])
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        known = _fields_at(model, loc[:-1])
        text = f"unknown field {name!r}"
        if known:
            hint = difflib.get_close_matches(name, known, n=1)
            text += f"; did you mean {hint[0]!r}?" if hint else ""
            text += f" (expected one of: {', '.join(known)})"
        return text
    if kind == "union_tag_invalid":
        return f"unknown check {ctx.get('tag')!r}; expected one of: {', '.join(CHECKS)}"
    if kind in ("model_type", "dict_type"):
        got = type(err.get("input")).__name__
        return f"expected a mapping (got {'nothing' if got == 'NoneType' else got})"
    if kind == "union_tag_not_found":
        return f"needs check: one of {', '.join(CHECKS)}"
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    value = err.get("input")
    if kind != "playbook" and isinstance(value, str | int | float | bool) and repr(value) not in msg:
        msg += f" (got {value!r})"
    return msg


def _validation_errors(
    exc: ValidationError, model: type[BaseModel], tree: _Pos, file: str
) -> list[PlaybookError]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "playbook":
            loc = (*loc, *ctx.get("at", ()))
        elif err["type"] == "union_tag_invalid":
            loc = (*loc, "check")
        trailing = err["type"] in ("missing", "playbook")
        line, path = _resolve(tree, loc, trailing)
        out.append(PlaybookError(file, line, path, _message(err, model)))
    return out


def _read_yaml(path: Path, file: str) -> tuple[Any, _Pos | None, list[PlaybookError]]:
    """Parse one YAML document: (data, position tree, errors). Data is None when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, None, [PlaybookError(file, 0, "<file>", f"cannot read: {exc}")]
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None, []
        dup: list[tuple[int, str, str]] = []
        tree = _index(node, node.start_mark.line + 1, dup, "")
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        what = exc.problem or str(exc)
        if exc.context and exc.context_mark is not None:
            what = f"{exc.context} (line {exc.context_mark.line + 1}): {what}"
        return None, None, [PlaybookError(file, line, "<yaml>", what)]
    except yaml.YAMLError as exc:
        return None, None, [PlaybookError(file, 0, "<yaml>", str(exc))]
    finally:
        loader.dispose()
    return data, tree, [PlaybookError(file, ln, f, m) for ln, f, m in dup]


def _validate(model: type[BaseModel], data: Any, tree: _Pos, file: str) -> tuple[Any, list[PlaybookError]]:
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, _validation_errors(exc, model, tree, file)


def _load(directory: Path) -> tuple[PlaybookSet | None, list[PlaybookError]]:
    directory = Path(directory)
    if not directory.is_dir():
        return None, [PlaybookError(str(directory), 0, "<file>", "not a directory of playbooks")]
    errors: list[PlaybookError] = []
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in (".yaml", ".yml"))
    limits = GlobalLimits()
    playbooks: list[tuple[Playbook, Path]] = []
    ids: dict[str, tuple[Path, int]] = {}  # from the raw YAML: a duplicate is reported even in a bad file
    n_playbook_files = 0
    for path in files:
        file = str(path)
        data, tree, problems = _read_yaml(path, file)
        errors += problems
        if path.stem == "_global":
            if path.name != GLOBAL_FILE:
                errors.append(PlaybookError(file, 0, "<file>", f"name the fleet-wide limits {GLOBAL_FILE}"))
                continue
            if tree is not None and data is not None:
                got, problems = _validate(GlobalLimits, data, tree, file)
                errors += problems
                limits = got or limits
            continue
        if path.name.startswith("_"):
            errors.append(
                PlaybookError(
                    file, 0, "<file>", f"only {GLOBAL_FILE} may start with '_'; rename the playbook"
                )
            )
            continue
        n_playbook_files += 1
        if tree is None:
            if not problems:
                errors.append(PlaybookError(file, 0, "<file>", "empty file: a playbook is a YAML mapping"))
            continue
        if isinstance(data, Mapping) and isinstance(data.get("id"), str) and tree.children:
            pid, id_line = data["id"], tree.children["id"].line
            if pid in ids:
                other, other_line = ids[pid]
                errors.append(
                    PlaybookError(
                        file, id_line, "id", f"duplicate playbook id {pid!r} (also {other}:{other_line})"
                    )
                )
            else:
                ids[pid] = (path, id_line)
        pb, problems = _validate(Playbook, data, tree, file)
        errors += problems
        if pb is not None:
            playbooks.append((pb, path))
            errors += _unknown_groups(pb, limits, tree, file)
    if not n_playbook_files:
        errors.append(PlaybookError(str(directory), 0, "<file>", "no playbooks (*.yaml) in this directory"))
    if errors:
        return None, sorted(errors)
    ordered = sorted((pb for pb, _ in playbooks), key=lambda p: p.id)
    return PlaybookSet(limits, tuple(ordered), {pb.id: path for pb, path in playbooks}), []


def _unknown_groups(pb: Playbook, limits: GlobalLimits, tree: _Pos, file: str) -> list[PlaybookError]:
    """A playbook's ``containment.node_groups`` and its match clauses' ``node_groups`` name groups of
    ``_global.yaml`` (read first)."""
    known = {g.name for g in limits.node_groups}
    listed = ", ".join(sorted(known)) or "none"

    def at(*keys: str | int) -> int:
        pos: _Pos | None = tree
        for key in keys:
            pos = (pos.children or {}).get(key) if pos is not None else None
        return pos.line if pos is not None else 0

    out = [
        PlaybookError(
            file,
            at("containment", "node_groups", name),
            f"containment.node_groups.{name}",
            f"{GLOBAL_FILE} has no node group {name!r} (it has: {listed})",
        )
        for name in pb.containment.node_groups
        if name not in known
    ]
    # ``match`` is one clause or a list of them.
    listed_clauses = isinstance((tree.children or {}).get("match"), _Pos) and 0 in (
        (tree.children or {})["match"].children or {}
    )
    for i, clause in enumerate(pb.match):
        for j, name in enumerate(clause.node_groups):
            if name in known:
                continue
            keys: tuple[str | int, ...] = ("match", i) if listed_clauses else ("match",)
            where = ".".join(str(k) for k in keys)
            out.append(
                PlaybookError(
                    file,
                    at(*keys, "node_groups", j) or at(*keys),
                    f"{where}.node_groups",
                    f"{GLOBAL_FILE} has no node group {name!r} (it has: {listed})",
                )
            )
    return out


def check(directory: Path | str) -> list[PlaybookError]:
    """Every error in every file of ``directory`` (empty when the set is valid), sorted by file and line."""
    return _load(Path(directory))[1]


def load_playbooks(directory: Path | str) -> PlaybookSet:
    """The valid playbook set in ``directory``; raises `PlaybookSetError` listing every error otherwise."""
    pset, errors = _load(Path(directory))
    if errors or pset is None:
        raise PlaybookSetError(errors)
    return pset
