"""The canonical dataset package: features, labels and a schema in one safetensors file.

A package is the plaintext that providers encrypt. ``features`` is float32 ``[rows, ...]``;
``labels`` is int64 ``[rows]`` (classification), float32 ``[rows, targets]`` (regression) or
float32 ``[rows, 2]``, time and event (survival); the schema (JSON in the safetensors metadata)
names the task, the feature names and shape, and the classes, targets or time intervals. Several providers' datasets can be joined in one
job only when their schema hashes are equal. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from .errors import InvalidDataset, MalformedSafetensors, SchemaMismatch

SCHEMA_VERSION = 1
MAX_HEADER_BYTES = 1 << 20


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces) used wherever a document is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


FeatureBounds = tuple[tuple[float, float] | None, ...]
"""Declared ``(lo, hi)`` per flattened feature, ``None`` where a feature has none."""

BOUND_LIMIT = 1e15
"""Every declared bound is below this in magnitude: integers stay exact in a JavaScript number."""
SMALLEST_FRACTION = 1e-4
"""A non-integral bound is at least this in magnitude: Python and JavaScript both print it in
plain decimal notation (Python switches to exponents below 1e-4, JavaScript below 1e-6)."""


def _bound_value(value: object, where: str) -> int | float:
    """One declared bound, normalised so Python's and JavaScript's canonical JSON print it alike.

    Raises:
        InvalidDataset: not a finite number, too large, or a fraction too small to print alike.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidDataset(f"{where} is {value!r}, not a number")
    if isinstance(value, int | np.integer):
        if abs(int(value)) >= BOUND_LIMIT:
            raise InvalidDataset(f"{where} is {value}, its magnitude must be below 1e15")
        return int(value)
    number = float(value)
    if not math.isfinite(number):
        raise InvalidDataset(f"{where} is {number}, not a finite number")
    if abs(number) >= BOUND_LIMIT:
        raise InvalidDataset(f"{where} is {number}, its magnitude must be below 1e15")
    if number.is_integer():
        return int(number)  # 1e6 -> 1000000, -0.0 -> 0
    if abs(number) < SMALLEST_FRACTION:
        raise InvalidDataset(f"{where} is {number}, a non-integral bound must be at least 1e-4 in magnitude")
    return number


def normalise_feature_bounds(
    bounds: object, *, feature_names: tuple[str, ...], feature_shape: tuple[int, ...], kind: str = "feature"
) -> FeatureBounds | None:
    """Check a schema's declared feature bounds and put them in canonical form.

    The one place bounds are checked, for schemas built in code and parsed from JSON alike:
    ``None`` stays ``None``; otherwise one entry per flattened feature, each ``None`` or
    ``(lo, hi)`` with ``lo < hi`` (:func:`_bound_value` for each number), at least one not ``None``.

    ``kind`` names what is bounded in the messages (``"target"``: a regression schema's targets).

    Raises:
        InvalidDataset: the message names the feature and the problem.
    """
    if bounds is None:
        return None
    field = f"{kind}_bounds"
    if isinstance(bounds, str | bytes) or not isinstance(bounds, list | tuple):
        raise InvalidDataset(f"{field} must be a list with one [lo, hi] or null per {kind}, got {type(bounds).__name__}")
    width = math.prod(feature_shape)
    if len(bounds) != width:
        raise InvalidDataset(f"{field} has {len(bounds)} entries, the schema has {width} {kind}s")
    normalised: list[tuple[float, float] | None] = []
    for i, entry in enumerate(bounds):
        name = f"{kind} {i} ({feature_names[i]!r})" if i < len(feature_names) else f"{kind} {i}"
        if entry is None:
            normalised.append(None)
            continue
        if isinstance(entry, str | bytes) or not isinstance(entry, list | tuple) or len(entry) != 2:
            raise InvalidDataset(f"{field} of {name} must be [lo, hi] or null, got {entry!r}")
        lo = _bound_value(entry[0], f"the lower bound of {name}")
        hi = _bound_value(entry[1], f"the upper bound of {name}")
        if not lo < hi:
            raise InvalidDataset(f"{field} of {name}: the lower bound {lo} is not below the upper bound {hi}")
        normalised.append((lo, hi))
    if all(entry is None for entry in normalised):
        raise InvalidDataset(f"{field} declares no bound: leave it out (None) instead of listing only nulls")
    return tuple(normalised)


TASKS = ("classification", "regression", "survival")
MAX_TIME_BINS = 100
_SCHEMA_KEYS = {"version", "task", "feature_names", "feature_shape", "class_names", "feature_bounds", "target_names",
                "target_bounds", "time_bins", "categories"}  # fmt: skip


def _target_bounds(bounds: object, names: tuple[str, ...]) -> tuple[tuple[float, float], ...]:
    """A regression schema's declared ``[lo, hi]`` per target, checked like feature bounds.

    Raises:
        InvalidDataset: not one ``[lo, hi]`` with ``lo < hi`` per target.
    """
    if isinstance(bounds, str | bytes) or not isinstance(bounds, list | tuple) or len(bounds) != len(names):
        raise InvalidDataset(f"target_bounds must be a list with one [lo, hi] per target ({len(names)}), got {bounds!r}")
    checked = normalise_feature_bounds(list(bounds), feature_names=names, feature_shape=(len(names),), kind="target")
    if checked is None or any(b is None for b in checked):
        raise InvalidDataset("target_bounds needs [lo, hi] for every target, not null")
    return tuple(b for b in checked if b is not None)


MAX_CATEGORIES = 10_000
"""Largest vocabulary of one categorical feature."""


def check_vocabulary(name: str, vocabulary: object) -> None:
    """A categorical feature's declared vocabulary: a list of 2 to :data:`MAX_CATEGORIES` distinct strings.

    Raises:
        InvalidDataset: names the feature and what is wrong.
    """
    if isinstance(vocabulary, str | bytes) or not isinstance(vocabulary, tuple | list) or not all(isinstance(v, str) for v in vocabulary):
        raise InvalidDataset(f"the vocabulary of {name!r} must be a list of strings")
    if not 2 <= len(vocabulary) <= MAX_CATEGORIES or len(set(vocabulary)) != len(vocabulary):
        raise InvalidDataset(f"the vocabulary of {name!r} needs 2 to {MAX_CATEGORIES:,} distinct categories, got {len(vocabulary)}")


def _categories_from_json(doc: object) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(doc, dict):
        raise InvalidDataset(f"categories must be an object of feature name to vocabulary, got {type(doc).__name__}")
    return tuple((str(name), tuple(vocabulary) if isinstance(vocabulary, list) else vocabulary) for name, vocabulary in doc.items())


def _categories(
    categories: object, feature_names: tuple[str, ...], feature_shape: tuple[int, ...], bounds: FeatureBounds | None
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Check declared categorical features and put them in feature order.

    Raises:
        InvalidDataset: image features, a name that is no feature, a vocabulary of fewer than 2 or
            repeated or non-string categories, or declared bounds on a categorical feature.
    """
    if not categories:
        return ()
    if len(feature_shape) != 1:
        raise InvalidDataset(f"categorical features need flat features, the schema has shape {list(feature_shape)}")
    if not isinstance(categories, tuple | list):
        raise InvalidDataset("categories must pair each categorical feature's name with its vocabulary")
    position = {name: i for i, name in enumerate(feature_names)}
    checked: dict[str, tuple[str, ...]] = {}
    for entry in categories:
        if not isinstance(entry, tuple | list) or len(entry) != 2:
            raise InvalidDataset("categories must pair each categorical feature's name with its vocabulary")
        name, vocabulary = entry
        if name not in position:
            raise InvalidDataset(f"categories names {name!r}, which is not a feature")
        if name in checked:
            raise InvalidDataset(f"categories names {name!r} twice")
        check_vocabulary(name, vocabulary)
        if bounds is not None and bounds[position[name]] is not None:
            raise InvalidDataset(f"{name!r} is categorical: it takes no feature bounds (its values are category indices)")
        checked[name] = tuple(vocabulary)
    return tuple(sorted(checked.items(), key=lambda item: position[item[0]]))


@dataclass(frozen=True)
class Schema:
    """What a dataset's rows mean; its hash goes on-chain with the listing.

    ``feature_bounds`` are the provider's public declarations of each feature's range (never
    computed from the rows): the enclave's models clip each bounded feature to them and scale it
    to [-1, 1] (:class:`~enclave_worker.trusted.models.ClipScale`). Normalised on construction
    (:func:`normalise_feature_bounds`); written to JSON only when set, so a schema without them
    keeps its hash.
    """

    task: str
    feature_names: tuple[str, ...]
    feature_shape: tuple[int, ...]
    class_names: tuple[str, ...] = ()
    feature_bounds: FeatureBounds | None = None
    target_names: tuple[str, ...] = ()
    """Regression: the outputs, one label column each (several: a multi-output model)."""
    target_bounds: tuple[tuple[float, float], ...] | None = None
    """Regression: each target's declared ``(lo, hi)``; labels are clipped to them in training and
    the model predicts in their units (required: DP-SGD needs a bounded loss scale)."""
    time_bins: tuple[float, ...] = ()
    """Survival: the ends ``t_1 < … < t_K`` of the K follow-up intervals ``(t_{k−1}, t_k]``
    (``t_0 = 0``), declared by the provider (public, like bounds: never computed from the rows)."""
    categories: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Categorical features (flat features only), in feature order: each feature's name and its
    vocabulary; the feature's value is the index of its category (0, 1, …). The model learns an
    embedding per category (:class:`~.models.CategoricalEmbedding`)."""

    def __post_init__(self) -> None:
        bounds = normalise_feature_bounds(self.feature_bounds, feature_names=self.feature_names, feature_shape=self.feature_shape)
        object.__setattr__(self, "feature_bounds", bounds)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "target_names", tuple(self.target_names))
        object.__setattr__(self, "time_bins", tuple(_bound_value(t, f"time bin {i}") for i, t in enumerate(self.time_bins)))
        object.__setattr__(self, "categories", _categories(self.categories, self.feature_names, self.feature_shape, self.feature_bounds))
        if self.target_bounds is not None and self.target_names and self.task == "regression":
            object.__setattr__(self, "target_bounds", _target_bounds(self.target_bounds, self.target_names))
        self._check_task()

    def _check_task(self) -> None:
        """The fields each task needs, and no others.

        Raises:
            InvalidDataset: names the task and what is missing or out of place.
        """
        if self.task not in TASKS:
            raise InvalidDataset(f"unsupported task {self.task!r} (supported: {', '.join(TASKS)})")
        if self.task == "classification" and len(self.class_names) < 2:
            raise InvalidDataset("a classification schema needs at least two classes")
        if self.task != "classification" and self.class_names:
            raise InvalidDataset(f"a {self.task} schema has no class names")
        if self.task == "regression":
            if not self.target_names or len(set(self.target_names)) != len(self.target_names):
                raise InvalidDataset("a regression schema needs one or more distinct target names")
            if self.target_bounds is None:
                raise InvalidDataset("a regression schema needs target_bounds, [lo, hi] per target: DP-SGD clips the labels to them")
        elif self.target_names or self.target_bounds is not None:
            raise InvalidDataset(f"a {self.task} schema has no targets (target_names, target_bounds are for regression)")
        if self.task == "survival":
            bins = self.time_bins
            if not 1 <= len(bins) <= MAX_TIME_BINS or bins[0] <= 0 or any(b <= a for a, b in zip(bins, bins[1:], strict=False)):
                raise InvalidDataset(
                    f"a survival schema needs 1 to {MAX_TIME_BINS} increasing positive time_bins (interval ends), got {list(bins)}"
                )
        elif self.time_bins:
            raise InvalidDataset(f"a {self.task} schema has no time_bins (they are for survival)")

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": SCHEMA_VERSION,
            "task": self.task,
            "feature_names": list(self.feature_names),
            "feature_shape": list(self.feature_shape),
            "class_names": list(self.class_names),
        }
        if self.feature_bounds is not None:
            doc["feature_bounds"] = [None if b is None else [b[0], b[1]] for b in self.feature_bounds]
        # Written only for the tasks that have them: a classification schema keeps its hash.
        if self.target_names:
            doc["target_names"] = list(self.target_names)
        if self.target_bounds is not None:
            doc["target_bounds"] = [[lo, hi] for lo, hi in self.target_bounds]
        if self.time_bins:
            doc["time_bins"] = list(self.time_bins)
        if self.categories:
            doc["categories"] = {name: list(vocabulary) for name, vocabulary in self.categories}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Schema:
        try:
            if doc["version"] != SCHEMA_VERSION:
                raise InvalidDataset(f"unsupported schema version {doc['version']}")
            unknown = set(doc) - _SCHEMA_KEYS
            if unknown:
                raise InvalidDataset(f"unknown dataset schema fields {sorted(unknown)}")
            schema = cls(
                task=str(doc["task"]),
                feature_names=tuple(str(n) for n in doc["feature_names"]),
                feature_shape=tuple(int(d) for d in doc["feature_shape"]),
                class_names=tuple(str(c) for c in doc["class_names"]),
                feature_bounds=doc.get("feature_bounds"),
                target_names=tuple(str(n) for n in doc.get("target_names", ())),
                target_bounds=doc.get("target_bounds"),
                time_bins=tuple(doc.get("time_bins", ())),
                categories=_categories_from_json(doc.get("categories", {})),
            )
        except InvalidDataset:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidDataset(f"malformed dataset schema: {e}") from e
        if not schema.feature_shape or any(d <= 0 for d in schema.feature_shape):
            raise InvalidDataset(f"invalid feature shape {schema.feature_shape}")
        return schema

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_outputs(self) -> int:
        """The model's output width: a logit per class, a prediction per target, a hazard logit per time interval."""
        if self.task == "regression":
            return len(self.target_names)
        if self.task == "survival":
            return len(self.time_bins)
        return len(self.class_names)

    @property
    def label_shape(self) -> tuple[int, ...]:
        """One row's label: a class index ``()`` (int64); the targets ``(m,)``; ``(2,)`` = (time, event) for survival (float32)."""
        if self.task == "regression":
            return (len(self.target_names),)
        if self.task == "survival":
            return (2,)
        return ()

    @property
    def label_dtype(self) -> type[np.generic]:
        return np.int64 if self.task == "classification" else np.float32

    @property
    def label_bytes(self) -> int:
        """Bytes of one row's label in a package."""
        return int(np.dtype(self.label_dtype).itemsize) * math.prod(self.label_shape)

    def hash(self) -> bytes:
        """SHA-256 of the canonical schema JSON (the on-chain ``schemaHash``)."""
        return hashlib.sha256(canonical_json(self.to_json())).digest()


@dataclass(frozen=True)
class DatasetPackage:
    """One provider's plaintext dataset in canonical form."""

    features: np.ndarray
    labels: np.ndarray
    schema: Schema

    def __post_init__(self) -> None:
        if self.features.dtype != np.float32:
            raise InvalidDataset(f"features must be float32, got {self.features.dtype}")
        if self.labels.dtype != self.schema.label_dtype or tuple(self.labels.shape[1:]) != self.schema.label_shape:
            raise InvalidDataset(f"labels must be {_label_kind(self.schema)}, got {self.labels.dtype} {list(self.labels.shape)}")
        if self.features.shape[0] != self.labels.shape[0]:
            raise InvalidDataset(f"{self.features.shape[0]} feature rows but {self.labels.shape[0]} labels")
        if self.features.shape[0] == 0:
            raise InvalidDataset("dataset has no rows")
        if tuple(self.features.shape[1:]) != self.schema.feature_shape:
            raise InvalidDataset(f"feature shape {self.features.shape[1:]} does not match schema {self.schema.feature_shape}")
        check_rows(self.features, self.labels, self.schema)

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    def blocks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The rows in order, ``size`` at a time (the last block may be shorter), each block contiguous."""
        for start in range(0, self.rows, size):
            yield np.ascontiguousarray(self.features[start : start + size]), np.ascontiguousarray(self.labels[start : start + size])

    def to_bytes(self) -> bytes:
        """Serialise as safetensors with the schema in the metadata."""
        return st_save(
            {"features": np.ascontiguousarray(self.features), "labels": np.ascontiguousarray(self.labels)},
            metadata={"sterling_schema": canonical_json(self.schema.to_json()).decode()},
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> DatasetPackage:
        """Parse a package.

        Raises:
            InvalidDataset: not a safetensors file with features, labels and a valid schema.
        """
        schema = _package_schema(raw)
        try:
            tensors = st_load(raw)
        except Exception as e:  # safetensors raises its own SafetensorError for malformed input
            raise InvalidDataset(f"dataset package is not valid safetensors: {e}") from e
        if set(tensors) != {"features", "labels"}:
            raise InvalidDataset(f"dataset package must hold exactly features and labels, found {sorted(tensors)}")
        return cls(features=tensors["features"], labels=tensors["labels"], schema=schema)


def _package_schema(raw: bytes) -> Schema:
    """The schema a dataset package's safetensors header carries (``raw`` holds at least the header).

    Raises:
        InvalidDataset: not a safetensors header, or no valid ``sterling_schema`` in its metadata.
    """
    try:
        metadata = safetensors_metadata(raw)
    except MalformedSafetensors as e:
        raise InvalidDataset(f"dataset package {e}") from e
    try:
        return Schema.from_json(json.loads(metadata["sterling_schema"]))
    except (KeyError, json.JSONDecodeError) as e:
        raise InvalidDataset("dataset package has no valid sterling_schema metadata") from e


def safetensors_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` map of a safetensors file's header (8-byte LE length, then JSON), read
    without parsing the tensors: where Sterling's packages and models carry their schema and spec.

    Raises:
        MalformedSafetensors: too short, a header length past the end or over ``MAX_HEADER_BYTES``,
            a header that is not a JSON object, or no metadata.
    """
    if len(raw) < 8:
        raise MalformedSafetensors("is too short to be safetensors")
    (header_len,) = struct.unpack("<Q", raw[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(raw):
        raise MalformedSafetensors("has an invalid safetensors header length")
    try:
        header = json.loads(raw[8 : 8 + header_len])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MalformedSafetensors("header is not JSON") from e
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise MalformedSafetensors("has no metadata")
    return {str(k): str(v) for k, v in metadata.items()}


def join(packages: list[DatasetPackage]) -> DatasetPackage:
    """Concatenate several providers' packages that share one schema.

    Raises:
        SchemaMismatch: the schemas differ.
    """
    if not packages:
        raise InvalidDataset("no datasets to join")
    first = packages[0].schema
    for i, pkg in enumerate(packages[1:], start=1):
        if pkg.schema != first:
            raise SchemaMismatch(f"dataset {i} has schema {pkg.schema.hash().hex()}, dataset 0 has {first.hash().hex()}")
    return DatasetPackage(
        features=np.concatenate([p.features for p in packages]),
        labels=np.concatenate([p.labels for p in packages]),
        schema=first,
    )


def _label_kind(schema: Schema) -> str:
    if schema.task == "regression":
        return f"float32 [rows, {len(schema.target_names)}] (one column per target)"
    if schema.task == "survival":
        return "float32 [rows, 2] (time, event)"
    return "a 1-D int64 array"


def check_rows(features: np.ndarray, labels: np.ndarray, schema: Schema) -> None:
    """The value checks every row of a package passes: finite features, and labels in range —
    a class in ``[0, classes)``; finite targets (regression: outside the declared bounds is allowed,
    training clips them); a finite time ≥ 0 and an event of 0 or 1 (survival); and a category index
    in ``[0, vocabulary size)`` in each categorical feature.

    A package checks all its rows at once; a dataset read chunk by chunk checks them block by block.

    Raises:
        InvalidDataset: a label out of range, or a NaN or infinite feature.
    """
    if schema.task == "classification":
        if len(labels) and (labels.min() < 0 or labels.max() >= schema.num_classes):
            raise InvalidDataset(f"labels outside [0, {schema.num_classes})")
    elif not np.isfinite(labels).all():
        raise InvalidDataset(f"{schema.task} labels contain NaN or infinity")
    elif schema.task == "survival" and len(labels):
        if labels[:, 0].min() < 0:
            raise InvalidDataset("survival times must be at least 0")
        if not np.isin(labels[:, 1], (0.0, 1.0)).all():
            raise InvalidDataset("survival events must be 0 (censored) or 1 (event observed)")
    if not np.isfinite(features).all():
        raise InvalidDataset("features contain NaN or infinity")
    if schema.categories and len(features):
        position = {name: i for i, name in enumerate(schema.feature_names)}
        for name, vocabulary in schema.categories:
            codes = features[:, position[name]]
            if codes.min() < 0 or codes.max() >= len(vocabulary) or not np.array_equal(codes, np.round(codes)):
                raise InvalidDataset(f"categorical feature {name!r} must hold category indices 0 to {len(vocabulary) - 1}")


_DTYPE_BYTES = {"F32": 4, "I64": 8}


@dataclass(frozen=True)
class PackageLayout:
    """Where a package's rows lie in its plaintext, read from its safetensors header alone.

    safetensors stores each tensor contiguously after the header (an 8-byte little-endian length,
    then JSON), so row ``r``'s features are ``row_bytes`` bytes at ``features_offset + r · row_bytes``
    and its label ``label_bytes`` at ``labels_offset + label_bytes · r``: a trainer that cannot hold the whole package
    reads rows by plaintext offset. Checked as :meth:`DatasetPackage.from_bytes` checks a whole file
    (what the header can tell: names, dtypes, shapes, offsets that tile the data exactly, the schema);
    the rows' values are checked as they are read (:func:`check_rows`).
    """

    schema: Schema
    rows: int
    header_len: int
    features_offset: int
    labels_offset: int

    @property
    def row_bytes(self) -> int:
        """Feature bytes per row (float32)."""
        return 4 * math.prod(self.schema.feature_shape)

    @property
    def size(self) -> int:
        """The plaintext's length: header and both tensors."""
        return 8 + self.header_len + self.rows * (self.row_bytes + self.schema.label_bytes)

    @staticmethod
    def header_length(prefix: bytes) -> int:
        """The safetensors header length from the plaintext's first 8 bytes.

        Raises:
            InvalidDataset: fewer than 8 bytes, or a length over ``MAX_HEADER_BYTES``.
        """
        if len(prefix) < 8:
            raise InvalidDataset("dataset package is too short to be safetensors")
        (header_len,) = struct.unpack("<Q", prefix[:8])
        if header_len > MAX_HEADER_BYTES:
            raise InvalidDataset("dataset package has an invalid safetensors header length")
        return int(header_len)

    @classmethod
    def parse(cls, prefix: bytes, plaintext_size: int) -> PackageLayout:
        """Read the layout from the plaintext's first ``8 + header length`` bytes.

        Raises:
            InvalidDataset: not a safetensors header holding exactly ``features`` (float32
                ``[rows, *feature_shape]``) and ``labels`` (int64 ``[rows]``) that tile the rest of
                the plaintext, with a valid ``sterling_schema``; or no rows.
        """
        header_len = cls.header_length(prefix)
        if 8 + header_len > min(len(prefix), plaintext_size):
            raise InvalidDataset("dataset package has an invalid safetensors header length")
        schema = _package_schema(prefix[: 8 + header_len])
        header = json.loads(prefix[8 : 8 + header_len])
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        if set(tensors) != {"features", "labels"}:
            raise InvalidDataset(f"dataset package must hold exactly features and labels, found {sorted(tensors)}")
        spans: dict[str, tuple[int, int]] = {}
        shapes: dict[str, tuple[int, ...]] = {}
        label_dtype = "I64" if schema.label_dtype is np.int64 else "F32"
        for name, want in (("features", "F32"), ("labels", label_dtype)):
            entry = tensors[name]
            try:
                dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
                valid = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (*shape, begin, end))
            except (TypeError, KeyError, ValueError) as e:
                raise InvalidDataset(f"dataset package is not valid safetensors: tensor {name} is malformed") from e
            if not valid:
                raise InvalidDataset(f"dataset package is not valid safetensors: tensor {name} is malformed")
            if dtype != want:
                kind = "features must be float32" if name == "features" else f"labels must be {_label_kind(schema)}"
                raise InvalidDataset(f"{kind}, got {dtype}")
            if end - begin != math.prod(shape) * _DTYPE_BYTES[dtype]:
                raise InvalidDataset(f"dataset package is not valid safetensors: tensor {name}'s offsets do not match its shape")
            spans[name], shapes[name] = (begin, end), shape
        first, second = sorted(spans.values())
        if first[0] != 0 or second[0] != first[1] or 8 + header_len + second[1] != plaintext_size:
            raise InvalidDataset("dataset package is not valid safetensors: its tensors do not tile the data")
        features, labels = shapes["features"], shapes["labels"]
        if tuple(labels[1:]) != schema.label_shape or not labels:
            raise InvalidDataset(f"labels must be {_label_kind(schema)}, got shape {list(labels)}")
        if not features or features[0] != labels[0]:
            raise InvalidDataset(f"{features[0] if features else 0} feature rows but {labels[0]} labels")
        if labels[0] == 0:
            raise InvalidDataset("dataset has no rows")
        if features[1:] != schema.feature_shape:
            raise InvalidDataset(f"feature shape {features[1:]} does not match schema {schema.feature_shape}")
        data = 8 + header_len
        return cls(
            schema=schema,
            rows=labels[0],
            header_len=header_len,
            features_offset=data + spans["features"][0],
            labels_offset=data + spans["labels"][0],
        )


def max_rows(plaintext_size: int, schema: Schema) -> int:
    """An upper bound on the rows of a package of ``plaintext_size`` bytes with ``schema``, known
    before decryption: its header holds at least the canonical schema JSON."""
    row = 4 * math.prod(schema.feature_shape) + schema.label_bytes
    return max(1, (plaintext_size - 8 - len(canonical_json(schema.to_json()))) // row)
