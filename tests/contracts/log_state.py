"""Rebuild the market's and the enclave registry's state from their event logs alone.

Both contracts emit an event after every state change. :func:`replay` folds the decoded events,
in log order, into a :class:`ChainState` (datasets with terms, status, access lists and ε ledger;
jobs with status, escrow, prices and ε spent; pending and withdrawn balances; locked escrow; the
pause flag; approved measurements and enclaves) without reading the chain: it is a pure function
of its input. The stateful contract test compares its result with the contracts' views, which shows
that an indexer reading only ``eth_getLogs`` can rebuild all state.

The same dataclasses hold the test's own model of the contracts, so the three views of the state
(model, views, logs) compare with ``==``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple, cast

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import collapse_if_tuple, event_abi_to_log_topic
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes

__all__ = [
    "TERMINAL",
    "ZERO_ADDRESS",
    "ChainState",
    "DatasetState",
    "DatasetStatus",
    "EnclaveState",
    "Event",
    "EventDecoder",
    "JobState",
    "JobStatus",
    "LogReplayError",
    "ResultHashes",
    "Terms",
    "normalise",
    "replay",
]

ZERO_ADDRESS = to_checksum_address("0x" + "00" * 20)
ROLE_TRAINER = 1


class JobStatus(IntEnum):
    """IJobMarket.JobStatus."""

    NONE = 0
    OPEN = 1
    CLAIMED = 2
    COMPLETED = 3
    EXPIRED = 4
    CANCELLED = 5


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.EXPIRED, JobStatus.CANCELLED})


class DatasetStatus(IntEnum):
    """IDatasetRegistry.DatasetStatus."""

    ACTIVE = 0
    PAUSED = 1
    DELISTED = 2


class Terms(NamedTuple):
    """IDatasetRegistry.Terms, in struct order (so it equals the ABI tuple)."""

    price_per_job: int
    max_epsilon_per_job: int
    total_epsilon_budget: int
    max_delta: int
    expiry: int


class ResultHashes(NamedTuple):
    """The hashes a ResultSubmitted event carries (the market does not store them)."""

    model_hash: bytes
    result_hash: bytes
    metrics_hash: bytes


@dataclass
class DatasetState:
    """One dataset. The allow-lists are the raw mappings: entries persist while unrestricted."""

    provider: str
    content_hash: bytes
    schema_hash: bytes
    uri: str
    terms: Terms
    epsilon_spent: int = 0
    epsilon_reserved: int = 0
    restricted: bool = False
    models_restricted: bool = False
    status: DatasetStatus = DatasetStatus.ACTIVE
    consumers: set[str] = field(default_factory=set)
    models: set[bytes] = field(default_factory=set)

    @property
    def remaining(self) -> int:
        """ε still available: total budget - spent - reserved."""
        return self.terms.total_epsilon_budget - self.epsilon_spent - self.epsilon_reserved

    def consumer_allowed(self, consumer: str) -> bool:
        """What ``isConsumerAllowed`` answers."""
        return not self.restricted or consumer in self.consumers

    def model_allowed(self, model_spec_hash: bytes) -> bool:
        """What ``isModelAllowed`` answers."""
        return not self.models_restricted or model_spec_hash in self.models


@dataclass
class JobState:
    """One job; ``prices`` are the per-dataset snapshots taken at creation."""

    consumer: str
    status: JobStatus
    model_spec_hash: bytes
    epsilon: int
    delta: int
    consumer_key: bytes
    escrow: int
    worker_fee: int
    claim_deadline: int
    completion_deadline: int
    dataset_ids: tuple[int, ...]
    prices: tuple[int, ...]
    enclave: str = ZERO_ADDRESS
    epsilon_spent: int = 0
    result: ResultHashes | None = None


@dataclass
class EnclaveState:
    """One enclave registration (a zero record with ``revoked`` set if revoked unregistered)."""

    role: int = 0
    measurement: bytes = b"\x00" * 32
    encryption_key: bytes = b"\x00" * 32
    operator: str = ZERO_ADDRESS
    valid_until: int = 0
    revoked: bool = False


@dataclass
class ChainState:
    """Everything the market and the registry hold. ``pending`` never stores zeros."""

    datasets: dict[int, DatasetState] = field(default_factory=dict)
    jobs: dict[int, JobState] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    withdrawn: dict[str, int] = field(default_factory=dict)
    locked_escrow: int = 0
    paused: bool = False
    approved: set[tuple[int, bytes]] = field(default_factory=set)
    enclaves: dict[str, EnclaveState] = field(default_factory=dict)

    def copy(self) -> ChainState:
        """A deep copy."""
        return copy.deepcopy(self)

    def enclave(self, signer: str) -> EnclaveState:
        """The registration of ``signer`` (a zero record if none), as ``enclaveOf`` returns it."""
        return self.enclaves.get(signer, EnclaveState())

    def active_operator(self, signer: str, role: int, now: int) -> str:
        """What the registry's ``activeOperator(signer, role)`` answers at block time ``now``."""
        e = self.enclave(signer)
        if e.role != role or e.revoked or e.valid_until < now or (role, e.measurement) not in self.approved:
            return ZERO_ADDRESS
        return e.operator

    def job_operator(self, job: JobState) -> str:
        """The ``operator`` field of ``job(id)``: the enclave's registered operator, if claimed."""
        return ZERO_ADDRESS if job.enclave == ZERO_ADDRESS else self.enclave(job.enclave).operator

    def credit(self, account: str, amount: int) -> None:
        """Add ``amount`` to ``account``'s pending withdrawal."""
        if amount:
            self.pending[account] = self.pending.get(account, 0) + amount


class LogReplayError(Exception):
    """The logs contradict themselves (e.g. a job settled twice, a ledger that does not add up)."""


class Event(NamedTuple):
    """A decoded log: which contract (by label) emitted which event with which arguments."""

    contract: str
    name: str
    args: dict[str, Any]


def normalise(abi_type: Mapping[str, Any], value: Any) -> Any:
    """Normalise a value eth_abi decoded for ``abi_type`` (an ABI input or output entry):
    checksum addresses, arrays and structs as tuples, recursively."""
    type_name: str = abi_type["type"]
    if type_name.endswith("]"):
        inner = dict(abi_type, type=type_name[: type_name.rindex("[")])
        return tuple(normalise(inner, v) for v in value)
    if type_name == "tuple":
        return tuple(normalise(c, v) for c, v in zip(abi_type["components"], value, strict=True))
    if type_name == "address":
        return to_checksum_address(value)
    return value


class EventDecoder:
    """Decodes raw logs (web3 or eth-tester shape) of known contracts into :class:`Event`.

    Args:
        contracts: ``{address: (label, abi)}`` for every contract whose logs should be decoded;
            logs of other addresses, and events not in the ABI, decode to ``None``.
    """

    def __init__(self, contracts: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]]) -> None:
        self._events: dict[tuple[str, bytes], tuple[str, Mapping[str, Any]]] = {}
        for address, (label, abi) in contracts.items():
            for item in abi:
                if item["type"] == "event" and not item.get("anonymous", False):
                    key = (to_checksum_address(address), bytes(event_abi_to_log_topic(cast(Any, item))))
                    self._events[key] = (label, item)

    def decode(self, log: Mapping[str, Any]) -> Event | None:
        """Decode one log, or return ``None`` if its contract or event is unknown."""
        topics = [bytes(HexBytes(t)) for t in log["topics"]]
        if not topics:
            return None
        found = self._events.get((to_checksum_address(log["address"]), topics[0]))
        if found is None:
            return None
        label, item = found
        indexed = [i for i in item["inputs"] if i.get("indexed")]
        plain = [i for i in item["inputs"] if not i.get("indexed")]
        values: dict[str, Any] = {}
        for spec, topic in zip(indexed, topics[1:], strict=True):
            # Every indexed parameter of these contracts is a static type, stored in full.
            values[spec["name"]] = normalise(spec, abi_decode([collapse_if_tuple(dict(spec))], topic)[0])
        decoded = abi_decode([collapse_if_tuple(dict(i)) for i in plain], bytes(HexBytes(log["data"])))
        for spec, value in zip(plain, decoded, strict=True):
            values[spec["name"]] = normalise(spec, value)
        args = {i["name"]: values[i["name"]] for i in item["inputs"]}
        return Event(label, item["name"], args)

    def decode_all(self, logs: Iterable[Mapping[str, Any]]) -> list[Event]:
        """Decode ``logs``, dropping the ones of unknown contracts or events."""
        return [e for e in (self.decode(log) for log in logs) if e is not None]


# --------------------------------------------------------------------------- the reducer


class _Replay:
    """Mutable fold state of :func:`replay` (private: replay itself is pure)."""

    def __init__(self) -> None:
        self.state = ChainState()
        # EpsilonReserved precedes its JobCreated: (datasetId, epsilon, price) per job, in order.
        self.reservations: dict[int, list[tuple[int, int, int]]] = {}

    def dataset(self, dataset_id: int) -> DatasetState:
        try:
            return self.state.datasets[dataset_id]
        except KeyError:
            raise LogReplayError(f"event for unknown dataset {dataset_id}") from None

    def job(self, job_id: int) -> JobState:
        try:
            return self.state.jobs[job_id]
        except KeyError:
            raise LogReplayError(f"event for unknown job {job_id}") from None

    def settle(self, job_id: int, status: JobStatus, *, expected: tuple[JobStatus, ...]) -> JobState:
        """Move a job to the terminal ``status`` and unlock its escrow; at most once per job."""
        job = self.job(job_id)
        if job.status in TERMINAL:
            raise LogReplayError(f"job {job_id} settled twice ({job.status.name}, then {status.name})")
        if job.status not in expected:
            raise LogReplayError(f"job {job_id} went {job.status.name} -> {status.name}")
        job.status = status
        self.state.locked_escrow -= job.escrow
        return job

    def check_remaining(self, dataset_id: int, remaining: int) -> None:
        ds = self.dataset(dataset_id)
        if ds.remaining != remaining or ds.remaining < 0:
            raise LogReplayError(f"dataset {dataset_id}: event says {remaining} ε left, ledger {ds.remaining}")

    # ---- DatasetRegistry

    def dataset_listed(self, a: dict[str, Any]) -> None:
        if a["datasetId"] != len(self.state.datasets) + 1:
            raise LogReplayError(f"dataset id {a['datasetId']} out of sequence")
        self.state.datasets[a["datasetId"]] = DatasetState(
            provider=a["provider"],
            content_hash=a["contentHash"],
            schema_hash=a["schemaHash"],
            uri=a["uri"],
            terms=Terms(*a["terms"]),
        )

    def terms_updated(self, a: dict[str, Any]) -> None:
        self.dataset(a["datasetId"]).terms = Terms(*a["terms"])

    def budget_topped_up(self, a: dict[str, Any]) -> None:
        ds = self.dataset(a["datasetId"])
        if ds.terms.total_epsilon_budget + a["amount"] != a["totalEpsilonBudget"]:
            raise LogReplayError(f"top-up of dataset {a['datasetId']} does not add up")
        ds.terms = ds.terms._replace(total_epsilon_budget=a["totalEpsilonBudget"])

    def dataset_status_changed(self, a: dict[str, Any]) -> None:
        self.dataset(a["datasetId"]).status = DatasetStatus(a["status"])

    def access_restricted(self, a: dict[str, Any]) -> None:
        ds = self.dataset(a["datasetId"])
        ds.restricted, ds.models_restricted = a["consumers"], a["models"]

    def consumer_allowed(self, a: dict[str, Any]) -> None:
        self.dataset(a["datasetId"]).consumers.add(a["consumer"])

    def consumer_disallowed(self, a: dict[str, Any]) -> None:
        self.dataset(a["datasetId"]).consumers.discard(a["consumer"])

    def model_allowed(self, a: dict[str, Any]) -> None:
        self.dataset(a["datasetId"]).models.add(a["modelSpecHash"])

    def model_disallowed(self, a: dict[str, Any]) -> None:
        self.dataset(a["datasetId"]).models.discard(a["modelSpecHash"])

    # ---- JobMarket

    def epsilon_reserved(self, a: dict[str, Any]) -> None:
        self.dataset(a["datasetId"]).epsilon_reserved += a["epsilon"]
        self.reservations.setdefault(a["jobId"], []).append((a["datasetId"], a["epsilon"], a["price"]))

    def job_created(self, a: dict[str, Any]) -> None:
        job_id = a["jobId"]
        if job_id != len(self.state.jobs) + 1:
            raise LogReplayError(f"job id {job_id} out of sequence")
        reserved = self.reservations.pop(job_id, [])
        if tuple(r[0] for r in reserved) != a["datasetIds"] or any(r[1] != a["epsilon"] for r in reserved):
            raise LogReplayError(f"job {job_id}: reservations {reserved} do not match its datasets")
        prices = tuple(r[2] for r in reserved)
        if sum(prices) + a["workerFee"] != a["escrow"]:
            raise LogReplayError(f"job {job_id}: escrow is not Σ prices + worker fee")
        self.state.jobs[job_id] = JobState(
            consumer=a["consumer"],
            status=JobStatus.OPEN,
            model_spec_hash=a["modelSpecHash"],
            epsilon=a["epsilon"],
            delta=a["delta"],
            consumer_key=a["consumerKey"],
            escrow=a["escrow"],
            worker_fee=a["workerFee"],
            claim_deadline=a["claimDeadline"],
            completion_deadline=a["completionDeadline"],
            dataset_ids=a["datasetIds"],
            prices=prices,
        )
        self.state.locked_escrow += a["escrow"]

    def epsilon_released(self, a: dict[str, Any]) -> None:
        self.dataset(a["datasetId"]).epsilon_reserved -= a["epsilon"]

    def budget_debited(self, a: dict[str, Any]) -> None:
        ds = self.dataset(a["datasetId"])
        ds.epsilon_reserved -= self.job(a["jobId"]).epsilon
        ds.epsilon_spent += a["epsilonSpent"]
        self.check_remaining(a["datasetId"], a["remaining"])

    def job_claimed(self, a: dict[str, Any]) -> None:
        job = self.job(a["jobId"])
        if job.status != JobStatus.OPEN:
            raise LogReplayError(f"job {a['jobId']} claimed while {job.status.name}")
        job.status = JobStatus.CLAIMED
        job.enclave = a["enclave"]

    def result_submitted(self, a: dict[str, Any]) -> None:
        job = self.settle(a["jobId"], JobStatus.COMPLETED, expected=(JobStatus.CLAIMED,))
        if a["enclave"] != job.enclave:
            raise LogReplayError(f"job {a['jobId']}: result from {a['enclave']}, claimed by {job.enclave}")
        job.epsilon_spent = a["epsilonSpent"]
        job.result = ResultHashes(a["modelHash"], a["resultHash"], a["metricsHash"])

    def job_expired(self, a: dict[str, Any]) -> None:
        job = self.settle(a["jobId"], JobStatus.EXPIRED, expected=(JobStatus.OPEN, JobStatus.CLAIMED))
        if a["refund"] != job.escrow:
            raise LogReplayError(f"job {a['jobId']}: refund {a['refund']} != escrow {job.escrow}")

    def job_cancelled(self, a: dict[str, Any]) -> None:
        job = self.settle(a["jobId"], JobStatus.CANCELLED, expected=(JobStatus.OPEN,))
        if a["refund"] != job.escrow:
            raise LogReplayError(f"job {a['jobId']}: refund {a['refund']} != escrow {job.escrow}")

    def payment_credited(self, a: dict[str, Any]) -> None:
        self.state.credit(a["account"], a["amount"])

    def withdrawn(self, a: dict[str, Any]) -> None:
        account, amount = a["account"], a["amount"]
        if self.state.pending.pop(account, 0) != amount:
            raise LogReplayError(f"{account} withdrew {amount}, not its pending balance")
        self.state.withdrawn[account] = self.state.withdrawn.get(account, 0) + amount

    def paused(self, a: dict[str, Any]) -> None:
        self.state.paused = True

    def unpaused(self, a: dict[str, Any]) -> None:
        self.state.paused = False

    # ---- EnclaveRegistry

    def measurement_approved(self, a: dict[str, Any]) -> None:
        self.state.approved.add((a["role"], a["measurement"]))

    def measurement_revoked(self, a: dict[str, Any]) -> None:
        self.state.approved.discard((a["role"], a["measurement"]))

    def enclave_revoked(self, a: dict[str, Any]) -> None:
        self.state.enclaves.setdefault(a["signer"], EnclaveState()).revoked = True

    def enclave_registered(self, a: dict[str, Any]) -> None:
        self.state.enclaves[a["signer"]] = EnclaveState(
            role=a["role"],
            measurement=a["measurement"],
            encryption_key=a["encryptionKey"],
            operator=a["operator"],
            valid_until=a["validUntil"],
        )


# (contract label, event name) -> the fold step that applies it.
_HANDLERS: dict[tuple[str, str], Callable[[_Replay, dict[str, Any]], None]] = {
    ("market", "DatasetListed"): _Replay.dataset_listed,
    ("market", "TermsUpdated"): _Replay.terms_updated,
    ("market", "BudgetToppedUp"): _Replay.budget_topped_up,
    ("market", "DatasetStatusChanged"): _Replay.dataset_status_changed,
    ("market", "AccessRestricted"): _Replay.access_restricted,
    ("market", "ConsumerAllowed"): _Replay.consumer_allowed,
    ("market", "ConsumerDisallowed"): _Replay.consumer_disallowed,
    ("market", "ModelAllowed"): _Replay.model_allowed,
    ("market", "ModelDisallowed"): _Replay.model_disallowed,
    ("market", "EpsilonReserved"): _Replay.epsilon_reserved,
    ("market", "JobCreated"): _Replay.job_created,
    ("market", "EpsilonReleased"): _Replay.epsilon_released,
    ("market", "BudgetDebited"): _Replay.budget_debited,
    ("market", "JobClaimed"): _Replay.job_claimed,
    ("market", "ResultSubmitted"): _Replay.result_submitted,
    ("market", "JobExpired"): _Replay.job_expired,
    ("market", "JobCancelled"): _Replay.job_cancelled,
    ("market", "PaymentCredited"): _Replay.payment_credited,
    ("market", "Withdrawn"): _Replay.withdrawn,
    ("market", "Paused"): _Replay.paused,
    ("market", "Unpaused"): _Replay.unpaused,
    ("registry", "MeasurementApproved"): _Replay.measurement_approved,
    ("registry", "MeasurementRevoked"): _Replay.measurement_revoked,
    ("registry", "EnclaveRevoked"): _Replay.enclave_revoked,
    ("registry", "EnclaveRegistered"): _Replay.enclave_registered,
}


def replay(events: Iterable[Event]) -> ChainState:
    """Fold the market's and the registry's events, in log order, into the state they describe.

    Events of other contracts (labels other than ``"market"`` and ``"registry"``) and events that
    change nothing this state tracks (role grants, admin handovers) are skipped.

    Raises:
        LogReplayError: the events contradict themselves (a job settled twice, an unknown dataset,
            a ``remaining`` that does not match the ledger, a withdrawal of another amount than
            the pending balance, ...).

    Example:
        >>> replay([]) == ChainState()
        True
    """
    fold = _Replay()
    for event in events:
        handler = _HANDLERS.get((event.contract, event.name))
        if handler is not None:
            handler(fold, event.args)
    if fold.reservations:
        raise LogReplayError(f"reservations without a JobCreated: {fold.reservations}")
    return fold.state
