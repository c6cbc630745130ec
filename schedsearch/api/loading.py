"""Reading ScheduleSearch specs from YAML, and validation errors as ``field.path: message`` lines.

Every consumer of spec files (``schedsearch validate``, ``schedsearch run``, tests) goes through
``load_specs`` so a bad spec reads the same everywhere: one line per problem, the field path in
camelCase as written in the YAML (``spec.strategy.pbt.population: Input should be ...``).

``target`` says where the spec will run: ``"cluster"`` adds what only the cluster needs (an image
for an entrypoint, a shared claim for PBT), as the API server does; ``"local"`` (the local
engine's default) leaves those out. ``"-"`` as a path reads standard input.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from schedsearch.api.spec import ScheduleSearch, Target
from schedsearch.trainers.config import FieldProblems, Loc, dotted

STDIN = "-"

# Messages of the trainers' validators start with the field they are about ("minLR: must ...").
_FIELD_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9]*): (.+)$", re.DOTALL)
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec: where (dotted camelCase path) and what."""

    path: str
    message: str
    document: int | None = None

    def __str__(self) -> str:
        where = f"document {self.document}: " if self.document is not None else ""
        return f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"


class SpecError(ValueError):
    """A spec source that does not validate; ``problems`` holds every problem found."""

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.source}: {problem}" for problem in self.problems]


def validation_problems(
    error: ValidationError, root: type[BaseModel] = ScheduleSearch, *, document: int | None = None
) -> list[Problem]:
    """The problems of a pydantic error, each with the full path of the field it is about."""
    problems: list[Problem] = []
    for detail in error.errors(include_url=False):
        for loc, message in _expand(detail, root):
            problem = Problem(dotted(loc), message, document)
            if problem not in problems:
                problems.append(problem)
    return problems


def format_validation_error(
    error: ValidationError, root: type[BaseModel] = ScheduleSearch
) -> list[str]:
    """``["spec.strategy.pbt.population: Input should be greater than or equal to 2", ...]``."""
    return [str(problem) for problem in validation_problems(error, root)]


def parse_spec(
    data: Any,
    *,
    source: str = "<spec>",
    document: int | None = None,
    target: Target = "local",
) -> ScheduleSearch:
    """Validate one already-parsed document for ``target``; raises ``SpecError`` listing every
    problem."""
    if not isinstance(data, Mapping):
        got = type(data).__name__
        raise SpecError(
            source, [Problem("", f"expected a ScheduleSearch mapping, got {got}", document)]
        )
    try:
        return ScheduleSearch.model_validate(data, context={"target": target})
    except ValidationError as err:
        raise SpecError(source, validation_problems(err, document=document)) from None


def load_specs(path: str | Path, *, target: Target = "local") -> list[ScheduleSearch]:
    """Every ScheduleSearch of a (multi-document) YAML file, or of standard input for ``"-"``;
    ``SpecError`` lists all problems."""
    source, documents = read_documents(path)
    return parse_documents(source, documents, target)


def read_documents(path: str | Path) -> tuple[str, list[Any]]:
    """(source name, the non-empty YAML documents) of a file or of standard input (``"-"``)."""
    source = "<stdin>" if str(path) == STDIN else str(path)
    try:
        text = sys.stdin.read() if str(path) == STDIN else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise SpecError(source, [Problem("", f"cannot read: {reason}")]) from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as err:
        raise SpecError(source, [Problem("", f"not valid YAML: {err}")]) from None
    if not documents:
        raise SpecError(source, [Problem("", "no ScheduleSearch in this file")])
    return source, documents


def load_spec(path: str | Path, *, target: Target = "local") -> ScheduleSearch:
    """The single ScheduleSearch of a file (``schedsearch run``)."""
    specs = load_specs(path, target=target)
    if len(specs) != 1:
        problem = Problem("", f"expected one ScheduleSearch, found {len(specs)}")
        raise SpecError(str(path), [problem])
    return specs[0]


def parse_documents(source: str, documents: list[Any], target: Target) -> list[ScheduleSearch]:
    """The searches of ``read_documents``; ``SpecError`` lists the problems of all of them."""
    numbered = len(documents) > 1
    specs: list[ScheduleSearch] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, data in enumerate(documents, start=1):
        document = index if numbered else None
        try:
            spec = parse_spec(data, source=source, document=document, target=target)
        except SpecError as err:
            problems.extend(err.problems)
            continue
        if spec.name in seen:
            message = f"duplicate name {spec.name!r} (also in document {seen[spec.name]})"
            problems.append(Problem("metadata.name", message, document))
        seen.setdefault(spec.name, index)
        specs.append(spec)
    if problems:
        raise SpecError(source, problems)
    return specs


# --- turning one pydantic error into located messages ------------------------------------------


def _expand(detail: Mapping[str, Any], root: type[BaseModel]) -> list[tuple[Loc, str]]:
    loc: Loc = tuple(detail["loc"])
    cause = (detail.get("ctx") or {}).get("error")
    if isinstance(cause, FieldProblems):
        return [(loc + sub, message) for sub, message in cause.problems]
    message = _strip_prefix(str(detail["msg"]))
    kind = detail["type"]
    if kind == "extra_forbidden":
        allowed = _field_names(_type_at(root, loc[:-1]))
        if allowed:
            message = f"unknown field; allowed: {', '.join(allowed)}"
    elif kind == "missing":
        message = "required"
    elif kind == "value_error":
        return [_locate_by_prefix(root, loc, message)]
    return [(loc, message)]


def _strip_prefix(message: str) -> str:
    for prefix in _PYDANTIC_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _locate_by_prefix(root: type[BaseModel], loc: Loc, message: str) -> tuple[Loc, str]:
    match = _FIELD_PREFIX.match(message)
    if match and match.group(1) in _field_names(_type_at(root, loc)):
        return (*loc, match.group(1)), match.group(2)
    return loc, message


def _field_names(tp: Any) -> list[str]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [info.alias or name for name, info in tp.model_fields.items()]
    return []


def _type_at(root: type[BaseModel], loc: Loc) -> Any:
    """The annotated type found by walking ``loc`` (aliases, list indices, map keys) from root."""
    current: Any = root
    for part in loc:
        current = _step(_unwrap(current), part)
        if current is None:
            return None
    return _unwrap(current)


def _step(tp: Any, part: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        for name, info in tp.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, Sequence) and isinstance(part, int) and args:
        return args[0]
    if origin in (dict, Mapping) and len(args) == 2:
        return args[1]
    return None


def _unwrap(tp: Any) -> Any:
    """Strip ``Annotated`` and ``X | None`` down to the type that carries fields."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            rest = [arg for arg in get_args(tp) if arg is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp
