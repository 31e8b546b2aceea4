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
    EVALUATOR = 4  # scores sealed competition submissions on private test sets, signs score receipts


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


# --- competitions (CompetitionMarket) ------------------------------------------------------------


class CompetitionStatus(enum.IntEnum):
    """``ICompetitionMarket.CompetitionStatus``."""

    NONE = 0  # no such competition
    OPEN = 1  # prize in escrow; submissions inside the window, scores until the close
    CLOSED = 2  # final: the prize went to the winner (or back to the organizer); models may be bought


class Metric(enum.IntEnum):
    """``ICompetitionMarket`` metrics; scores are fixed-point integers in units of 10⁻⁶ (:data:`SCORE_SCALE`)."""

    ACCURACY = 1  # share of rows whose arg-max class is the label (higher is better)
    MACRO_F1 = 2  # unweighted mean of the per-class F1 scores (higher is better)
    ROC_AUC = 3  # binary: AUC of the positive class; more classes: macro one-vs-rest (higher is better)
    LOG_LOSS = 4  # mean negative log-likelihood of the label, probabilities clipped to [1e-15, 1] (lower is better)
    RMSE = 5  # root mean squared error of the class probabilities against the one-hot label (lower is better)

    @property
    def higher_is_better(self) -> bool:
        return self in (Metric.ACCURACY, Metric.MACRO_F1, Metric.ROC_AUC)


class Split(enum.IntEnum):
    """Which part of a competition's test set a score is computed on (``ScoreReceipt.split``)."""

    PUBLIC = 1  # the leaderboard's split: released through the Ladder while the window is open
    PRIVATE = 2  # the deciding split: scored once per submission after the window closes


class PurchasePolicy(enum.IntEnum):
    """``CompetitionTerms.purchasePolicy``: who may buy a submitted model after the close."""

    NONE = 0  # nobody: every model stays sealed
    ORGANIZER = 1  # the organizer only
    ANYONE = 2  # any account


class Architecture(enum.IntFlag):
    """``CompetitionTerms.architectures``: the model architectures a competition accepts (a bit mask)."""

    LOGISTIC_REGRESSION = 1
    MLP = 2
    CNN = 4


SCORE_SCALE = 10**6
"""A score on-chain is a fixed-point integer in units of 10⁻⁶ of the metric (accuracy 0.9731 is 973100)."""
NO_SCORE_LOWER_IS_BETTER = 2**64 - 1
"""``publicBest`` before the first public score of a lower-is-better metric (0 for higher-is-better ones)."""
