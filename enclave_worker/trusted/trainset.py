"""The rows DP-SGD trains on: held in memory, or scanned from the host one window of batches at a time.

Both kinds give the trainer the same thing — for each Poisson-sampled index batch from
:func:`.dpsgd.poisson_batches` (the one sampler; neither kind draws anything), the rows at those
indices, in index order — so for the same randomness they train bit-identical models
(``tests/enclave_worker/test_chunked_training.py``).

:class:`ScannedRows` is the training set of a job whose rows do not fit the enclave's memory
(:mod:`.memory_budget`): a virtual concatenation of segments (each provider's
:class:`.hosted.EncryptedPackage`, then any audit canaries, in the job's order). It never reads the
rows a batch needs; it reads all of them, in a fixed order:

1. draw the index batches of the next ``window_steps`` steps (the sampler's own order and stream);
2. scan every chunk of every segment once, sequentially, copying the rows some batch of the window
   drew into a buffer of ``window_rows`` rows (in row order, a row once per batch that drew it);
3. train the window's steps on their rows.

The host serves every scan the same sequence of byte ranges, whatever the batches, so it learns
nothing of which rows were sampled from the reads (``docs/privacy.md``, "Datasets larger than the
enclave"). If a window's batches exceed the buffer (probability below e^-112), the window is split
and the host sees one scan more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Protocol

import numpy as np
import torch

from .dataset import DatasetPackage, Schema, check_rows
from .errors import MemoryBudgetExceeded, SchemaMismatch


class TrainingRows(Protocol):
    """Rows the trainer gathers batches from."""

    @property
    def rows(self) -> int: ...

    @property
    def schema(self) -> Schema: ...

    def batches(self, sampled: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(features, labels)`` of each index batch of ``sampled``, in order; an empty batch gives empty tensors."""
        ...


class InMemoryRows:
    """A package's rows, all in memory: each batch is an index into them."""

    def __init__(self, package: DatasetPackage) -> None:
        self.package = package
        self._features = torch.from_numpy(package.features)
        self._labels = torch.from_numpy(package.labels)

    @property
    def rows(self) -> int:
        return self.package.rows

    @property
    def schema(self) -> Schema:
        return self.package.schema

    def batches(self, sampled: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for picked in sampled:
            yield self._features[picked], self._labels[picked]


class Segment(Protocol):
    """Consecutive rows of a training set, read in blocks."""

    @property
    def rows(self) -> int: ...

    @property
    def schema(self) -> Schema: ...

    def blocks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """All rows in order, ``(first row, features, labels)`` per block; arrays valid until the next block."""
        ...


class ArraySegment:
    """Rows already in enclave memory (the audit's canaries), as one block."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, schema: Schema) -> None:
        self.features = features
        self.labels = labels
        self.schema = schema
        self.rows = len(labels)

    def blocks(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        if self.rows:
            yield 0, self.features, self.labels


class ScannedRows:
    """Segments trained on window by window, each window gathered by one full scan.

    Example:
        >>> rows = ScannedRows([package_a, package_b], window_steps=40, window_rows=12_000)  # doctest: +SKIP
        >>> rows.check()  # one scan: every label in range, every feature finite
        >>> for features, labels in rows.batches(dpsgd.poisson_batches(rows.rows, q, steps, rng)):
        ...     engine.step(features, labels)
    """

    def __init__(self, segments: Sequence[Segment], *, window_steps: int = 1, window_rows: int = 0) -> None:
        if not segments:
            raise ValueError("no segments")
        schema = segments[0].schema
        for i, segment in enumerate(segments[1:], start=1):
            if segment.schema != schema:
                raise SchemaMismatch(f"dataset {i} has schema {segment.schema.hash().hex()}, dataset 0 has {schema.hash().hex()}")
        if window_steps < 1 or window_rows < 0:
            raise ValueError("window_steps must be positive and window_rows non-negative")
        self.segments = list(segments)
        self.schema = schema
        self.rows = sum(s.rows for s in segments)
        self.window_steps = window_steps
        self.window_rows = window_rows
        self.scans = 0
        self._features: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def scan(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Every row once, segment after segment: ``(first row in the whole set, features, labels)``
        per block (arrays valid until the next block)."""
        self.scans += 1
        offset = 0
        for segment in self.segments:
            for first, features, labels in segment.blocks():
                yield offset + first, features, labels
            offset += segment.rows

    def check(self) -> None:
        """One scan checking every row's values (:func:`.dataset.check_rows`).

        Raises:
            InvalidDataset: a label out of range or a feature not finite.
        """
        for _, features, labels in self.scan():
            check_rows(features, labels, self.schema)

    def load(self) -> DatasetPackage:
        """All rows in one package (checked as every package is): one scan into preallocated arrays."""
        features = np.empty((self.rows, *self.schema.feature_shape), dtype=np.float32)
        labels = np.empty((self.rows, *self.schema.label_shape), dtype=self.schema.label_dtype)
        for first, block_features, block_labels in self.scan():
            features[first : first + len(block_labels)] = block_features
            labels[first : first + len(block_labels)] = block_labels
        return DatasetPackage(features=features, labels=labels, schema=self.schema)

    def blocks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All rows in order in blocks of ``size`` rows (the last may be shorter), from one scan:
        the same blocks as slicing the rows in memory would give."""
        features = np.empty((size, *self.schema.feature_shape), dtype=np.float32)
        labels = np.empty((size, *self.schema.label_shape), dtype=self.schema.label_dtype)
        filled = 0
        for _, block_features, block_labels in self.scan():
            done = 0
            while done < len(block_labels):
                take = min(size - filled, len(block_labels) - done)
                features[filled : filled + take] = block_features[done : done + take]
                labels[filled : filled + take] = block_labels[done : done + take]
                filled += take
                done += take
                if filled == size:
                    yield features, labels
                    filled = 0
        if filled:
            yield features[:filled], labels[:filled]

    def batches(self, sampled: Iterable[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each batch's rows, gathered ``window_steps`` batches per scan (see the module's docstring).

        Raises:
            MemoryBudgetExceeded: one batch alone exceeds ``window_rows`` (probability below e^-112).
        """
        source = iter(sampled)
        carried: list[torch.Tensor] = []
        while True:
            window = carried + list(islice(source, self.window_steps - len(carried)))
            if not window:
                return
            total, fits = 0, 0
            for batch in window:
                if total + len(batch) > self.window_rows:
                    break
                total += len(batch)
                fits += 1
            if fits == 0:
                raise MemoryBudgetExceeded(f"a Poisson batch of {len(window[0])} rows exceeds the {self.window_rows}-row scan window")
            window, carried = window[:fits], window[fits:]
            yield from self._gather(window)

    def _buffers(self) -> tuple[np.ndarray, np.ndarray]:
        if self._features is None or self._labels is None:
            self._features = np.empty((self.window_rows, *self.schema.feature_shape), dtype=np.float32)
            self._labels = np.empty((self.window_rows, *self.schema.label_shape), dtype=self.schema.label_dtype)
        return self._features, self._labels

    def _gather(self, window: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        features, labels = self._buffers()
        wanted = torch.cat(window).numpy()
        order = np.argsort(wanted, kind="stable")
        rows = wanted[order]  # the window's rows by index: the buffer's layout
        position = np.empty_like(order)
        position[order] = np.arange(len(order))  # where each batch row sits in the buffer
        del wanted, order  # not held through the scan
        for first, block_features, block_labels in self.scan():  # every block is read, used or not
            lo, hi = np.searchsorted(rows, (first, first + len(block_labels)))
            if hi > lo:
                local = rows[lo:hi] - first
                np.take(block_features, local, axis=0, out=features[lo:hi])
                np.take(block_labels, local, axis=0, out=labels[lo:hi])
        held_features, held_labels = torch.from_numpy(features), torch.from_numpy(labels)
        positions = torch.from_numpy(position)
        start = 0
        for batch in window:
            end = start + len(batch)
            # Indexing makes a fresh tensor, as indexing rows in memory does: same values, same layout.
            picked = positions[start:end]
            yield held_features[picked], held_labels[picked]
            start = end
