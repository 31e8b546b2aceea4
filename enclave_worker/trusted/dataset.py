"""The canonical dataset package: features, labels and a schema in one safetensors file.

A package is the plaintext that providers encrypt. ``features`` is float32 ``[rows, ...]``,
``labels`` is int64 ``[rows]``; the schema (JSON in the safetensors metadata) names the task,
the feature names and shape, and the classes. Several providers' datasets can be joined in one
job only when their schema hashes are equal. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import struct
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


@dataclass(frozen=True)
class Schema:
    """What a dataset's rows mean; its hash goes on-chain with the listing."""

    task: str
    feature_names: tuple[str, ...]
    feature_shape: tuple[int, ...]
    class_names: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": SCHEMA_VERSION,
            "task": self.task,
            "feature_names": list(self.feature_names),
            "feature_shape": list(self.feature_shape),
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Schema:
        try:
            if doc["version"] != SCHEMA_VERSION:
                raise InvalidDataset(f"unsupported schema version {doc['version']}")
            schema = cls(
                task=str(doc["task"]),
                feature_names=tuple(str(n) for n in doc["feature_names"]),
                feature_shape=tuple(int(d) for d in doc["feature_shape"]),
                class_names=tuple(str(c) for c in doc["class_names"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidDataset(f"malformed dataset schema: {e}") from e
        if schema.task != "classification":
            raise InvalidDataset(f"unsupported task {schema.task!r} (supported: classification)")
        if len(schema.class_names) < 2:
            raise InvalidDataset("a classification schema needs at least two classes")
        if not schema.feature_shape or any(d <= 0 for d in schema.feature_shape):
            raise InvalidDataset(f"invalid feature shape {schema.feature_shape}")
        return schema

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

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
        if self.labels.dtype != np.int64 or self.labels.ndim != 1:
            raise InvalidDataset("labels must be a 1-D int64 array")
        if self.features.shape[0] != self.labels.shape[0]:
            raise InvalidDataset(f"{self.features.shape[0]} feature rows but {self.labels.shape[0]} labels")
        if self.features.shape[0] == 0:
            raise InvalidDataset("dataset has no rows")
        if tuple(self.features.shape[1:]) != self.schema.feature_shape:
            raise InvalidDataset(f"feature shape {self.features.shape[1:]} does not match schema {self.schema.feature_shape}")
        if self.labels.min() < 0 or self.labels.max() >= self.schema.num_classes:
            raise InvalidDataset(f"labels outside [0, {self.schema.num_classes})")
        if not np.isfinite(self.features).all():
            raise InvalidDataset("features contain NaN or infinity")

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

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
        try:
            metadata = safetensors_metadata(raw)
        except MalformedSafetensors as e:
            raise InvalidDataset(f"dataset package {e}") from e
        try:
            schema = Schema.from_json(json.loads(metadata["sterling_schema"]))
        except (KeyError, json.JSONDecodeError) as e:
            raise InvalidDataset("dataset package has no valid sterling_schema metadata") from e
        try:
            tensors = st_load(raw)
        except Exception as e:  # safetensors raises its own SafetensorError for malformed input
            raise InvalidDataset(f"dataset package is not valid safetensors: {e}") from e
        if set(tensors) != {"features", "labels"}:
            raise InvalidDataset(f"dataset package must hold exactly features and labels, found {sorted(tensors)}")
        return cls(features=tensors["features"], labels=tensors["labels"], schema=schema)


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
