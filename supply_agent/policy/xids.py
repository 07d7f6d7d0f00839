"""NVIDIA's Xid catalogue for Ampere and newer GPUs, as validated data: per XID code its mnemonic, the
products (and so the GPU families) it applies to, and the immediate and investigatory resolution buckets
NVIDIA assigns it.

It exists so that what the agent does for an XID comes from what NVIDIA publishes, not from the list of
XIDs its authors happened to write playbooks for: the data lives in ``data/xid_catalogue.csv`` (sources,
columns and the disagreements with NVSentinel's mapping in ``data/README.md``), the meaning of each bucket
in ``data/xid_buckets.csv``, and this module checks both against one schema. As with playbooks, a check
reports every problem at once, each as ``FILE:LINE: xid CODE: FIELD: MESSAGE``.

The package stays pure: reading these two files, when asked to, is the only I/O here. `load_catalogue`
reads the shipped files once and caches them; `read_catalogue` and `check_catalogue` take other paths.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from supply_agent.policy.base import NonEmptyStr, Strict

CATALOGUE_FILE = "xid_catalogue.csv"
BUCKETS_FILE = "xid_buckets.csv"
CATALOGUE_SOURCE = "https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html"

# The vocabulary of the data, spelled as NVIDIA's catalogue spells it ("Resolution Bucket (Immediate
# Action)" and "(Investigatory Action)"); a test checks these are exactly the names the data uses.
ImmediateBucket = Literal[
    "CONTACT_SUPPORT",
    "RESTART_APP",
    "IGNORE",
    "RESET_GPU",
    "RESTART_BM",
    "RESTART_VM",
    "WORKFLOW_XID_45",
    "WORKFLOW_XID_48",
    "WORKFLOW_NVLINK_ERR",
    "WORKFLOW_NVLINK5_ERR",
    "CHECK_MECHANICALS",
    "UPDATE_SWFW",
    "XID_154",
    "CHECK_UVM",
]
InvestigatoryBucket = Literal[
    "CONTACT_SUPPORT",
    "IGNORE",
    "CHECK_APP/CUDA",
    "WORKFLOW_XID_13",
    "WORKFLOW_XID_31",
    "WORKFLOW_XID_48",
    "WORKFLOW_NVLINK5_ERR",
    "Solo: RESTART_FM Not Solo: IGNORE (follow other Xid)",
    "INVESTIGATE_SW",
    "INVESTIGATE_SW_USER",
    "INVESTIGATE_LINK_SI",
    "IGNORE (sympathetic)",
    "SYMPATHETIC_REPORT_SOLO",
    "XID_137_FLOW",
    "UPDATE_SWFW",
    "N/A Informational only regarding another Xid",
    "N/A; Unused",
]
# The catalogue's "Applies to" columns, and the architecture of each.
Product = Literal["A100", "H100", "B100", "GB200"]
Family = Literal["Ampere", "Hopper", "Blackwell"]
FAMILY_OF: dict[str, Family] = {"A100": "Ampere", "H100": "Hopper", "B100": "Blackwell", "GB200": "Blackwell"}

IMMEDIATE_BUCKETS: tuple[str, ...] = get_args(ImmediateBucket)
INVESTIGATORY_BUCKETS: tuple[str, ...] = get_args(InvestigatoryBucket)
BUCKETS: frozenset[str] = frozenset(IMMEDIATE_BUCKETS) | frozenset(INVESTIGATORY_BUCKETS)
PRODUCTS: tuple[str, ...] = get_args(Product)

COLUMNS = (
    "code",
    "mnemonic",
    "description",
    "applies_to",
    "immediate_action",
    "investigatory_action",
    "xid154_linkage",
    "nvsentinel_action",
    "source",
    "notes",
)
BUCKET_COLUMNS = ("bucket", "meaning")


def _one_of(known: Sequence[str], what: str) -> Any:
    def check(value: Any) -> Any:
        if value is None or value in known:
            return value
        text = f"unknown {what} {value!r}"
        if isinstance(value, str) and (hint := difflib.get_close_matches(value, known, n=1)):
            text += f"; did you mean {hint[0]!r}?"
        raise PydanticCustomError("unknown_name", text + f" (expected one of: {', '.join(known)})")

    return check


def _products(value: Any) -> Any:
    if value is None:
        return ()
    if not isinstance(value, str):
        return value
    names = [p.strip() for p in value.split(";")]
    check = _one_of(PRODUCTS, "product")
    for name in names:
        check(name)
    if len(set(names)) != len(names):
        raise PydanticCustomError("duplicate_product", f"a product is named twice in {value!r}")
    return tuple(names)


class XidEntry(Strict):
    """One XID code of the catalogue. ``immediate_action`` is None where the catalogue gives no bucket
    (some of the newest codes); ``applies_to`` is empty where it lists no product (unused codes)."""

    code: Annotated[int, Field(ge=1, le=9999)]
    mnemonic: Annotated[str, Field(pattern=r"^[A-Z0-9_]+( / [A-Z0-9_]+)*$")]
    description: NonEmptyStr
    applies_to: Annotated[tuple[Product, ...], BeforeValidator(_products)] = ()
    immediate_action: Annotated[
        ImmediateBucket | None, BeforeValidator(_one_of(IMMEDIATE_BUCKETS, "bucket"))
    ] = None
    investigatory_action: Annotated[
        InvestigatoryBucket | None, BeforeValidator(_one_of(INVESTIGATORY_BUCKETS, "bucket"))
    ] = None
    xid154_linkage: NonEmptyStr | None = None
    nvsentinel_action: NonEmptyStr | None = None
    source: NonEmptyStr
    notes: NonEmptyStr | None = None

    @property
    def families(self) -> tuple[Family, ...]:
        """The GPU architectures of ``applies_to``, in catalogue order, each once."""
        return tuple(dict.fromkeys(FAMILY_OF[p] for p in self.applies_to))


class XidCatalogue(Strict):
    """Every catalogued XID, by code, and what each bucket name means."""

    entries: tuple[XidEntry, ...]
    meanings: dict[str, NonEmptyStr]
    _by_code: dict[int, XidEntry] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> XidCatalogue:
        seen: set[int] = set()
        for entry in self.entries:
            if entry.code in seen:
                raise ValueError(f"duplicate xid {entry.code}")
            seen.add(entry.code)
        unknown = sorted(set(self.meanings) - BUCKETS)
        if unknown:
            raise ValueError(f"meanings for unknown buckets: {', '.join(unknown)}")
        missing = sorted(self.used_buckets() - set(self.meanings))
        if missing:
            raise ValueError(f"no meaning for buckets: {', '.join(missing)}")
        return self

    def model_post_init(self, context: Any, /) -> None:
        self._by_code = {entry.code: entry for entry in self.entries}

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, code: int) -> XidEntry | None:
        return self._by_code.get(code)

    @property
    def codes(self) -> tuple[int, ...]:
        return tuple(sorted(self._by_code))

    def used_buckets(self) -> set[str]:
        """Every bucket name the entries use, immediate and investigatory."""
        used = {e.immediate_action for e in self.entries} | {e.investigatory_action for e in self.entries}
        return {b for b in used if b is not None}

    def by_bucket(self) -> dict[ImmediateBucket | None, tuple[int, ...]]:
        """The codes of each immediate bucket (None: the catalogue gives none), in code order."""
        out: dict[ImmediateBucket | None, list[int]] = {}
        for entry in sorted(self.entries, key=lambda e: e.code):
            out.setdefault(entry.immediate_action, []).append(entry.code)
        return {bucket: tuple(codes) for bucket, codes in out.items()}


@dataclass(frozen=True, order=True)
class XidProblem:
    """One problem in a catalogue file: ``FILE:LINE: xid CODE: FIELD: MESSAGE`` (``code`` None when the
    row has none, line 0 for the file as a whole)."""

    file: str
    line: int
    field: str
    message: str
    code: int | None = None

    def __str__(self) -> str:
        row = f" xid {self.code}:" if self.code is not None else ""
        return f"{self.file}:{self.line}:{row} {self.field}: {self.message}"


class XidCatalogueError(ValueError):
    """`read_catalogue` found problems; ``errors`` holds every one of them."""

    def __init__(self, errors: Sequence[XidProblem]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} Xid catalogue error(s):\n" + "\n".join(map(str, self.errors)))


Source = Path | str | None
_Row = tuple[int, dict[str, str | None]]


def _read(source: Source, default: str) -> tuple[str, str | None, list[XidProblem]]:
    """(file label, text or None, problems) of a file, the shipped ``data/<default>`` when None."""
    if source is None:
        traversable = resources.files("supply_agent.policy").joinpath("data", default)
        label = str(traversable)
        try:
            return label, traversable.read_text(encoding="utf-8"), []
        except (OSError, UnicodeDecodeError) as exc:
            return label, None, [XidProblem(label, 0, "<file>", f"cannot read: {exc}")]
    label = str(source)
    try:
        return label, Path(source).read_text(encoding="utf-8"), []
    except (OSError, UnicodeDecodeError) as exc:
        return label, None, [XidProblem(label, 0, "<file>", f"cannot read: {exc}")]


def _rows(text: str, file: str, columns: tuple[str, ...]) -> tuple[list[_Row], list[XidProblem]]:
    """The data rows of a CSV text, each with its first line and its cells (empty -> None)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[XidProblem] = []
    try:
        header = next(reader, None)
        if header is None:
            return [], [XidProblem(file, 0, "<file>", "empty file: expected a header row")]
        if tuple(header) != columns:
            return [], [
                XidProblem(
                    file, 1, "<header>", f"expected columns {','.join(columns)}; got {','.join(header)}"
                )
            ]
        rows: list[_Row] = []
        end = reader.line_num
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(columns):
                problems.append(
                    XidProblem(file, start, "<row>", f"expected {len(columns)} fields, got {len(cells)}")
                )
                continue
            row: dict[str, str | None] = {}
            for name, cell in zip(columns, cells, strict=True):
                if cell != cell.strip():
                    problems.append(
                        XidProblem(file, start, name, f"leading or trailing whitespace in {cell!r}")
                    )
                row[name] = cell.strip() or None
            rows.append((start, row))
    except csv.Error as exc:
        problems.append(XidProblem(file, reader.line_num, "<csv>", str(exc)))
        return [], problems
    return rows, problems


def _code_of(row: Mapping[str, str | None]) -> int | None:
    code = row.get("code")
    return int(code) if code is not None and code.isdigit() else None


def _entries(rows: Iterable[_Row], file: str) -> tuple[list[XidEntry], list[XidProblem]]:
    entries: list[XidEntry] = []
    problems: list[XidProblem] = []
    first_line: dict[int, int] = {}
    for line, row in rows:
        code = _code_of(row)
        try:
            entry = XidEntry.model_validate({k: v for k, v in row.items() if v is not None})
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                field = str(err["loc"][0]) if err["loc"] else "<row>"
                msg = "required field is missing" if err["type"] == "missing" else err["msg"]
                got = row.get(field)
                if err["type"] != "missing" and got is not None and repr(got) not in msg:
                    msg += f" (got {got!r})"
                problems.append(XidProblem(file, line, field, msg, code))
            continue
        if entry.code in first_line:
            problems.append(
                XidProblem(
                    file, line, "code", f"duplicate xid (first at line {first_line[entry.code]})", code
                )
            )
            continue
        first_line[entry.code] = line
        entries.append(entry)
    return entries, problems


def _meanings(rows: Iterable[_Row], file: str) -> tuple[dict[str, str], list[XidProblem]]:
    meanings: dict[str, str] = {}
    lines: dict[str, int] = {}
    problems: list[XidProblem] = []
    check = _one_of(sorted(BUCKETS), "bucket")
    for line, row in rows:
        bucket, meaning = row["bucket"], row["meaning"]
        if bucket is None or meaning is None:
            field = "bucket" if bucket is None else "meaning"
            problems.append(XidProblem(file, line, field, "required field is missing"))
            continue
        try:
            check(bucket)
        except PydanticCustomError as exc:
            problems.append(XidProblem(file, line, "bucket", exc.message()))
            continue
        if bucket in lines:
            problems.append(
                XidProblem(file, line, "bucket", f"duplicate bucket (first at line {lines[bucket]})")
            )
            continue
        lines[bucket] = line
        meanings[bucket] = meaning
    return meanings, problems


def _load(catalogue: Source, buckets: Source) -> tuple[XidCatalogue | None, list[XidProblem]]:
    cat_file, cat_text, problems = _read(catalogue, CATALOGUE_FILE)
    bkt_file, bkt_text, more = _read(buckets, BUCKETS_FILE)
    problems += more
    if cat_text is None or bkt_text is None:
        return None, sorted(problems)
    rows, more = _rows(cat_text, cat_file, COLUMNS)
    problems += more
    entries, more = _entries(rows, cat_file)
    problems += more
    meaning_rows, more = _rows(bkt_text, bkt_file, BUCKET_COLUMNS)
    problems += more
    meanings, more = _meanings(meaning_rows, bkt_file)
    problems += more
    if not rows and not any(p.file == cat_file for p in problems):
        problems.append(XidProblem(cat_file, 0, "<file>", "no rows: the catalogue lists no XID"))
    if not problems:
        lines = {_code_of(row): line for line, row in rows}
        for entry in entries:
            for field in ("immediate_action", "investigatory_action"):
                bucket = getattr(entry, field)
                if bucket is not None and bucket not in meanings:
                    problems.append(
                        XidProblem(
                            cat_file,
                            lines[entry.code],
                            field,
                            f"{bucket!r} has no meaning in {bkt_file}",
                            entry.code,
                        )
                    )
    if problems:
        return None, sorted(problems)
    return XidCatalogue(entries=tuple(entries), meanings=meanings), []


def check_catalogue(catalogue: Source = None, buckets: Source = None) -> list[XidProblem]:
    """Every problem in the catalogue and bucket files (empty when both are valid); the shipped files by
    default."""
    return _load(catalogue, buckets)[1]


def read_catalogue(catalogue: Source = None, buckets: Source = None) -> XidCatalogue:
    """The catalogue in these files (the shipped ones by default); raises `XidCatalogueError` listing
    every problem otherwise."""
    cat, problems = _load(catalogue, buckets)
    if problems or cat is None:
        raise XidCatalogueError(problems)
    return cat


@functools.cache
def load_catalogue() -> XidCatalogue:
    """The shipped catalogue, read and validated once."""
    return read_catalogue()


def lookup(code: int) -> XidEntry | None:
    """The shipped catalogue's entry for XID ``code``, None when it does not list the code."""
    return load_catalogue().get(code)


def bucket_of(code: int) -> ImmediateBucket | None:
    """The immediate resolution bucket NVIDIA gives XID ``code``; None when the code is not catalogued
    or the catalogue gives it no bucket (the caller's conservative default applies)."""
    entry = lookup(code)
    return entry.immediate_action if entry is not None else None


# Buckets whose XID reports on an earlier error rather than a fault of its own (the catalogue's "Not
# Solo" codes): 45 is the cleanup after another XID, 154 announces the recovery another one needs.
FOLLOWER_BUCKETS = frozenset({"WORKFLOW_XID_45", "XID_154"})


def follows_another(code: int) -> bool:
    """Whether the catalogue's bucket for ``code`` says it follows another XID on the same GPU."""
    return bucket_of(code) in FOLLOWER_BUCKETS
