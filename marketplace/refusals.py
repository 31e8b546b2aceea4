"""The contracts' custom errors a person can cause and fix, in words.

``explain(ContractReverted)`` turns ``JobMarketBudgetExhausted(4, 2000000, 500000)`` into
"Dataset #4 has only 0.5 ε left, less than the 2 ε asked for." Errors without a sentence here are
shown by name with their values (they are bugs or attacks, not something a user did).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from enclave_worker.trusted.onchain import DatasetStatus, JobStatus

from .contracts import EPSILON_SCALE
from .errors import ContractReverted

TERMS_PROBLEMS = (
    "the content hash is zero",
    "the ε per job must be positive",
    "the ε per job cannot exceed the total budget",
    "δ must be positive",
    "the expiry date has passed (set a new one, or none)",
    "the total budget cannot go below the ε already spent and reserved",
    "the price is too high",
)
"""``IDatasetRegistry.TermsProblem``, in order."""


def _eps(units: Any) -> str:
    return f"{int(units) / EPSILON_SCALE:g}"


def _status(enum: Any, value: Any) -> str:
    try:
        return str(enum(int(value)).name.lower())
    except ValueError:
        return f"in status {value}"


def _problem(value: Any) -> str:
    index = int(value)
    return TERMS_PROBLEMS[index] if 0 <= index < len(TERMS_PROBLEMS) else "they are invalid"


SENTENCES: dict[str, Callable[[Sequence[Any]], str]] = {
    "JobMarketPriceAboveLimit": lambda a: (
        f"The price went up before the transaction was mined: the job now costs {a[0]}, more than the {a[1]} agreed to. "
        "Nothing was charged; check the new total and create the job again."
    ),
    "JobMarketDatasetUnavailable": lambda a: f"Dataset #{a[0]} is {_status(DatasetStatus, a[1])} and accepts no new jobs.",
    "JobMarketDatasetExpired": lambda a: f"Dataset #{a[0]} has expired and accepts no new jobs.",
    "JobMarketConsumerNotAllowed": lambda a: f"Dataset #{a[0]} is offered only to an allow-list of buyers, and this account is not on it.",
    "JobMarketModelNotAllowed": lambda a: (
        f"Dataset #{a[0]} accepts only model specs its provider approved, and this one is not among them."
    ),
    "JobMarketBudgetExhausted": lambda a: f"Dataset #{a[0]} has only {_eps(a[2])} ε left, less than the {_eps(a[1])} ε asked for.",
    "JobMarketEpsilonPerJobExceeded": lambda a: f"Dataset #{a[0]} allows at most {_eps(a[2])} ε per job; {_eps(a[1])} ε was asked for.",
    "JobMarketDeltaExceeded": lambda a: f"Dataset #{a[0]} allows a δ of at most {int(a[2]) / 1e18:g}; {int(a[1]) / 1e18:g} was asked for.",
    "JobMarketDuplicateDataset": lambda a: f"Dataset #{a[0]} is named twice: name each dataset once.",
    "JobMarketUnknownDataset": lambda a: f"There is no dataset #{a[0]}.",
    "JobMarketUnknownJob": lambda a: f"There is no job #{a[0]}.",
    "JobMarketInvalidJobStatus": lambda a: f"Job #{a[0]} is {_status(JobStatus, a[1])} now and can no longer be changed this way.",
    "JobMarketNotConsumer": lambda a: f"Only the consumer who created job #{a[0]} can do this.",
    "JobMarketNothingToWithdraw": lambda a: f"The market holds nothing for {a[0]} to withdraw.",
    "JobMarketIncorrectPayment": lambda a: f"The transaction paid {a[0]}; the job needs exactly {a[1]}.",
    "EnforcedPause": lambda a: (
        "The market is in an emergency stop: no new listings, jobs, claims or settlements until governance resumes it."
    ),
    "DatasetRegistryNotProvider": lambda a: f"Only the provider of dataset #{a[0]} can change it.",
    "DatasetRegistryDelisted": lambda a: f"Dataset #{a[0]} is delisted and can no longer be changed.",
    "DatasetRegistryUnknownDataset": lambda a: f"There is no dataset #{a[0]}.",
    "DatasetRegistryInvalidTerms": lambda a: f"The terms were refused: {_problem(a[0])}.",
    "DatasetRegistryInvalidTopUp": lambda a: "A top-up must add a positive amount of ε that keeps the budget within its limit.",
    "PullPaymentsNothingToWithdraw": lambda a: "There is nothing to withdraw.",
    "ERC20InsufficientBalance": lambda a: f"{a[0]} holds {a[1]} of the payment token; {a[2]} is needed.",
    "ERC20InsufficientAllowance": lambda a: f"The market may spend {a[1]} of the payment token for this account; {a[2]} is needed.",
}
"""Error name → the sentence its values make."""


def explain(error: ContractReverted) -> str:
    """``error`` in words (its name and values when no sentence is known)."""
    sentence = SENTENCES.get(error.error)
    if sentence is None:
        return str(error)
    try:
        return sentence(error.error_args)
    except (IndexError, TypeError, ValueError):  # values of another shape than the contracts send
        return str(error)
