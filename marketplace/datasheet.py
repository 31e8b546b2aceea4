"""Datasheets: the public description every listing carries, whose SHA-256 is on-chain (``setDatasheet``).

A datasheet (after Gebru et al., "Datasheets for Datasets") says what a dataset is so that a
consumer can tell listings apart and judge one before paying: title, description, tags, licence,
provenance, collection period, intended uses, the provider's display name, the public row count,
the label's name and what each column means and in which unit. It is descriptive only: the
enclave never reads it. What the enclave reads is the listing's schema (``schemaHash``, fixed at
listing), which also holds the provider's *declared* feature bounds
(:attr:`enclave_worker.trusted.dataset.Schema.feature_bounds`). The columns shown to a user join
the two by name (:func:`columns_of`).

The format is :class:`Datasheet`; ``docs/datasheet.schema.json`` is its JSON schema, generated
from it (a test keeps the file current). A datasheet's hash is the SHA-256 of its canonical JSON
(sorted keys, no spaces, ASCII escapes): :meth:`Datasheet.to_bytes`, which the browser computes
byte for byte too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from enclave_worker.trusted.dataset import Schema, canonical_json
from marketplace.errors import SterlingError

DATASHEET_VERSION = 1
MAX_DATASHEET_BYTES = 256 * 1024
"""A datasheet larger than this is refused (a 2,000-column table still fits)."""

Title = Annotated[str, StringConstraints(min_length=1, max_length=120, pattern=r"\S")]
Tag = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class InvalidDatasheet(SterlingError, ValueError):
    """A datasheet is malformed or does not fit its dataset; ``problems`` lists each as ``(path, message)``."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [("", message)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DatasheetColumn(_Strict):
    """What one feature column means (its declared bounds are in the schema, not here)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(description="a feature name of the dataset's schema")
    description: Annotated[str, StringConstraints(max_length=1000)] = ""
    unit: Annotated[str, StringConstraints(max_length=40)] = Field("", description='e.g. "years", "EUR per year", "count"')


class DatasheetLabel(_Strict):
    """The label column: its name in the provider's file and what it records (its classes are in the schema)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=1000)] = ""


IsoDate = Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class CollectionPeriod(_Strict):
    """When the rows were collected (ISO dates ``YYYY-MM-DD``, start on or before end)."""

    start: IsoDate
    end: IsoDate

    @model_validator(mode="after")
    def _ordered(self) -> CollectionPeriod:
        try:
            start, end = dt.date.fromisoformat(self.start), dt.date.fromisoformat(self.end)
        except ValueError as e:
            raise ValueError(f"not a calendar date: {e}") from e
        if start > end:
            raise ValueError(f"the collection period starts ({self.start}) after it ends ({self.end})")
        return self


class Datasheet(_Strict):
    """The public description of one listing (``docs/datasheets.md``)."""

    version: Literal[1]
    title: Title
    description: Annotated[str, StringConstraints(min_length=1, max_length=5000, pattern=r"\S")]
    tags: Annotated[list[Tag], Field(max_length=16, description="lower-case words or hyphenated phrases, each at most once")]
    license: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"\S")] = Field(
        description='an SPDX identifier ("CC-BY-4.0") or "proprietary"'
    )
    provider_name: Annotated[str, StringConstraints(min_length=1, max_length=80, pattern=r"\S")] = Field(
        description="how the provider is shown to consumers"
    )
    rows: Annotated[int, Field(ge=1, le=2**53 - 1, description="the public row count")]
    label: DatasheetLabel
    columns: Annotated[list[DatasheetColumn], Field(max_length=100_000)] = Field(default_factory=list)
    provenance: Annotated[str, StringConstraints(max_length=2000)] = ""
    intended_uses: Annotated[str, StringConstraints(max_length=2000)] = ""
    collection_period: CollectionPeriod | None = None

    @model_validator(mode="after")
    def _unique(self) -> Datasheet:
        if len(set(self.tags)) != len(self.tags):
            raise ValueError("a tag is named twice")
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError("a column is described twice")
        return self

    # -- the document ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The document: optional fields left at their defaults are left out."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def to_bytes(self) -> bytes:
        """The canonical JSON whose SHA-256 goes on-chain.

        A gateway hashes the canonical form of a document *as published* (:func:`document_hash`),
        so a document that spells out a default (``"unit": ""``) keeps its own hash; this SDK
        always publishes this form.
        """
        return canonical_json(self.to_json())

    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_json(cls, doc: Any) -> Datasheet:
        """Validate a parsed document.

        Raises:
            InvalidDatasheet: with every problem found, each named by its path (``columns.2.unit``).
        """
        if not isinstance(doc, dict):
            raise InvalidDatasheet(f"a datasheet is a JSON object, not {type(doc).__name__}")
        if doc.get("version") != DATASHEET_VERSION:
            raise InvalidDatasheet(
                f"unsupported datasheet version {doc.get('version')!r} (this is version {DATASHEET_VERSION})",
                [("version", f"must be {DATASHEET_VERSION}")],
            )
        try:
            return cls.model_validate(doc)
        except ValidationError as e:
            problems = [(".".join(str(p) for p in err["loc"]), _message(err)) for err in e.errors()]
            summary = "; ".join(f"{path or 'datasheet'}: {message}" for path, message in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InvalidDatasheet(f"the datasheet is not valid: {summary}{more}", problems) from None

    @classmethod
    def from_bytes(cls, raw: bytes) -> Datasheet:
        if len(raw) > MAX_DATASHEET_BYTES:
            raise InvalidDatasheet(f"a datasheet is at most {MAX_DATASHEET_BYTES} bytes, this one is {len(raw)}")
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise InvalidDatasheet(f"the datasheet is not JSON: {e}") from e
        return cls.from_json(doc)

    # -- against the dataset ----------------------------------------------------------------

    def check_fits(self, schema: Schema, *, rows: int | None = None) -> None:
        """Refuse a datasheet that describes another table than ``schema`` (and ``rows``, when known).

        Raises:
            InvalidDatasheet: a described column is not a feature of the schema, the label is
                described as a feature, or the row count differs from the file's.
        """
        problems: list[tuple[str, str]] = []
        features = set(schema.feature_names)
        for i, column in enumerate(self.columns):
            if column.name not in features:
                known = _few(schema.feature_names)
                problems.append((f"columns.{i}.name", f"{column.name!r} is not a feature of the dataset (its features: {known})"))
        if self.label.name in features:
            problems.append(("label.name", f"{self.label.name!r} is a feature column, not the label"))
        if rows is not None and rows != self.rows:
            problems.append(("rows", f"the datasheet says {self.rows} rows, the dataset has {rows}"))
        if problems:
            raise InvalidDatasheet("the datasheet does not fit the dataset: " + "; ".join(f"{p}: {m}" for p, m in problems), problems)

    def search_text(self) -> str:
        """What a free-text search matches, lower-cased: the words a consumer would look for."""
        parts = [self.title, self.description, " ".join(self.tags), self.provider_name]
        parts += [self.label.name, self.label.description, self.license]
        for column in self.columns:
            parts += [column.name, column.description, column.unit]
        parts += [self.provenance, self.intended_uses]
        return "\n".join(p for p in parts if p).lower()


def document_hash(doc: dict[str, Any]) -> bytes:
    """The SHA-256 of a published datasheet document: of its canonical JSON, as published."""
    return hashlib.sha256(canonical_json(doc)).digest()


def columns_of(schema: Schema, datasheet: Datasheet | None) -> list[dict[str, Any]]:
    """Each feature as a user reads it: name, description and unit (datasheet), declared bounds (schema)."""
    described = {c.name: c for c in datasheet.columns} if datasheet is not None else {}
    bounds = getattr(schema, "feature_bounds", None)
    out = []
    for i, name in enumerate(schema.feature_names):
        column = described.get(name)
        declared = bounds[i] if bounds is not None and i < len(bounds) else None
        out.append({
            "name": name,
            "description": column.description if column else "",
            "unit": column.unit if column else "",
            "bounds": list(declared) if declared is not None else None,
        })  # fmt: skip
    return out


def json_schema() -> dict[str, Any]:
    """The published JSON schema of a datasheet (``docs/datasheet.schema.json``)."""
    schema = Datasheet.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sterling.example/schemas/datasheet.schema.json"
    return schema


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "is not a datasheet field"
    if err["type"] == "missing":
        return "is required"
    if err["type"] == "string_pattern_mismatch":
        pattern = str(err.get("ctx", {}).get("pattern", ""))
        if pattern == r"\S":
            return "must not be blank"
        if pattern.startswith("^[a-z0-9]"):
            return "a tag is lower-case letters, digits and hyphens, at most 32 characters (e.g. credit-scoring)"
        return "must be a date written YYYY-MM-DD"
    return str(err["msg"]).removeprefix("Value error, ")


def _few(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:8])
    return shown + (f", … ({len(names)} in all)" if len(names) > 8 else "")
