"""Constants that mirror the contracts: enclave roles, lifecycle statuses, fixed-point scales.

This is their one definition. The measured code needs some of them (the key manager checks a job's
status, receipts carry ε in micro-units), so they live at the lowest layer; the SDK re-exports them
(``marketplace.contracts``) and the gateway serves them to the UI (``GET /api/config``).
"""

from __future__ import annotations

import enum

EPSILON_SCALE = 10**6
"""ε on-chain is a fixed-point integer in micro-ε."""
DELTA_SCALE = 10**18
"""δ on-chain is a fixed-point integer in units of 10⁻¹⁸."""


class Role(enum.IntEnum):
    """What an enclave is registered to do (``EnclaveRegistry.ROLE_*``)."""

    TRAINER = 1
    KEY_MANAGER = 2
    INFERENCE = 3  # serves sealed models (ModelMarket): decrypts queries, runs the model, signs responses


class JobStatus(enum.IntEnum):
    """``IJobMarket.JobStatus``."""

    NONE = 0  # no such job
    OPEN = 1  # escrowed, waiting for a worker
    CLAIMED = 2  # a trainer enclave holds it
    COMPLETED = 3  # receipt accepted, budgets debited, parties credited
    EXPIRED = 4  # a deadline passed; the consumer was refunded
    CANCELLED = 5  # the consumer cancelled before a claim


class DatasetStatus(enum.IntEnum):
    """``IDatasetRegistry.DatasetStatus``: whether new jobs may use a dataset."""

    ACTIVE = 0
    PAUSED = 1
    DELISTED = 2


class ModelStatus(enum.IntEnum):
    """``IModelMarket.ModelStatus``: whether a listed model may be served and bought credit for."""

    NONE = 0  # no such model
    ACTIVE = 1
    PAUSED = 2
    DELISTED = 3


class OutputPolicy(enum.IntEnum):
    """``IModelMarket`` output policy: what the inference enclave releases per row (the listing's
    ``outputPolicy``; its ``outputParam`` is k for TOP_K and the decimals for PROBABILITIES)."""

    LABEL = 1  # the arg-max class only
    TOP_K = 2  # the k most likely classes, most likely first, without their probabilities
    PROBABILITIES = 3  # every class's probability, rounded to outputParam decimals (0-6)


MAX_PROBABILITY_DECIMALS = 6
