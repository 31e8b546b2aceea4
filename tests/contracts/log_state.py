"""The state of the market and the enclave registry as the contract tests model it, and as the
shipped chain index holds it.

:class:`ChainState` (datasets with terms, status, access lists and ε ledger; jobs with status,
escrow, prices and ε spent; pending and withdrawn balances; locked escrow; the pause flag; approved
measurements and enclaves) holds the stateful test's model of the contracts. :func:`read_index`
reads the same state back from a database the shipped indexer (:mod:`oracle.indexer`, folding the
logs with :mod:`oracle.fold`) wrote, so the three views of the state (model, contract views,
index built from ``eth_getLogs``) compare with ``==``. No event is folded here: what an event
means is said once, in :mod:`oracle.fold`.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import collapse_if_tuple, event_abi_to_log_topic
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from sqlalchemy import select

from marketplace.contracts import DatasetStatus, JobStatus
from oracle.fold import PaymentReason
from oracle.index_db import (
    BudgetEvent,
    Dataset,
    Enclave,
    EnclaveRevocation,
    IndexDatabase,
    Job,
    JobEvent,
    MarketState,
    Measurement,
    Payment,
)

__all__ = [
    "TERMINAL",
    "ZERO_ADDRESS",
    "ChainState",
    "DatasetState",
    "EnclaveState",
    "Event",
    "EventDecoder",
    "IndexHistory",
    "JobState",
    "ResultHashes",
    "Terms",
    "normalise",
    "read_index",
    "read_index_history",
]

ZERO_ADDRESS = to_checksum_address("0x" + "00" * 20)


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.EXPIRED, JobStatus.CANCELLED})


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




# --------------------------------------------------------------------------- the index, read back


def _bytes(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def read_index(db: IndexDatabase, cursor_key: str) -> ChainState:
    """The state an index built by :class:`oracle.indexer.Indexer` holds, as a :class:`ChainState`.

    Balances are what the payment history adds up to (pending: Σ credited - Σ withdrawn per
    account; locked escrow: Σ escrow of jobs not yet settled). Index-only columns that the state
    derives are checked on the way (each dataset's stored ``remaining_epsilon``, each refund).
    """
    state = ChainState()
    with db.session() as session:
        for row in session.scalars(select(Dataset).order_by(Dataset.id)):
            terms = Terms(row.price_wei, row.max_epsilon_per_job, row.total_epsilon, row.max_delta, row.expiry)
            ds = DatasetState(
                provider=row.provider,
                content_hash=_bytes(row.content_hash),
                schema_hash=_bytes(row.schema_hash),
                uri=row.uri,
                terms=terms,
                epsilon_spent=row.spent_epsilon,
                epsilon_reserved=row.reserved_epsilon,
                restricted=row.restricted,
                models_restricted=row.models_restricted,
                status=DatasetStatus(row.status),
                consumers={c.consumer for c in row.consumers},
                models={_bytes(m.model_spec_hash) for m in row.models},
            )
            assert row.remaining_epsilon == ds.remaining, f"dataset {row.id}: index says {row.remaining_epsilon} ε left, ledger {ds.remaining}"
            state.datasets[row.id] = ds
        for job in session.scalars(select(Job).order_by(Job.id)):
            status = JobStatus(job.status)
            results = (job.model_hash, job.result_hash, job.metrics_hash)
            state.jobs[job.id] = JobState(
                consumer=job.consumer,
                status=status,
                model_spec_hash=_bytes(job.model_spec_hash),
                epsilon=job.epsilon,
                delta=job.delta,
                consumer_key=_bytes(job.consumer_key),
                escrow=job.escrow_wei,
                worker_fee=job.worker_fee_wei,
                claim_deadline=job.claim_deadline,
                completion_deadline=job.completion_deadline,
                dataset_ids=tuple(d.dataset_id for d in job.datasets),
                prices=tuple(d.price_wei for d in job.datasets),
                enclave=job.enclave or ZERO_ADDRESS,
                epsilon_spent=job.epsilon_spent or 0,
                result=ResultHashes(*(_bytes(h) for h in results)) if all(results) else None,
            )
            refunded = status in (JobStatus.EXPIRED, JobStatus.CANCELLED)
            assert job.refund_wei == (job.escrow_wei if refunded else None), f"job {job.id}: refund {job.refund_wei}"
            if status not in TERMINAL:
                state.locked_escrow += job.escrow_wei
        credited: defaultdict[str, int] = defaultdict(int)
        for payment in session.scalars(select(Payment).order_by(Payment.id)):
            if payment.kind == "credited":
                credited[payment.account] += payment.amount_wei
            else:
                state.withdrawn[payment.account] = state.withdrawn.get(payment.account, 0) + payment.amount_wei
        for account, amount in credited.items():
            state.credit(account, amount - state.withdrawn.get(account, 0))
        pause = session.get(MarketState, cursor_key)
        state.paused = pause is not None and pause.paused
        state.approved = {(m.role, _bytes(m.measurement)) for m in session.scalars(select(Measurement)) if m.approved}
        for enclave in session.scalars(select(Enclave)):
            state.enclaves[enclave.signer] = EnclaveState(
                role=enclave.role,
                measurement=_bytes(enclave.measurement),
                encryption_key=_bytes(enclave.encryption_key),
                operator=enclave.operator,
                valid_until=enclave.valid_until,
            )
        for revoked in session.scalars(select(EnclaveRevocation)):
            state.enclaves.setdefault(revoked.signer, EnclaveState()).revoked = True
    return state


@dataclass
class IndexHistory:
    """The history tables of an index, summed up for the checks the state cannot express."""

    stages: dict[int, list[str]] = field(default_factory=dict)
    """Each job's timeline (``job_events.stage``), in log order."""
    credits: dict[PaymentReason, int] = field(default_factory=dict)
    """Σ credited per reason."""
    ledger: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Each dataset's (remaining, total) ε after its last ledger change (``dataset_budget_events``)."""


def read_index_history(db: IndexDatabase) -> IndexHistory:
    """Job timelines, credits by reason and the last ledger entries of an index."""
    history = IndexHistory()
    with db.session() as session:
        for job_id, stage in session.execute(select(JobEvent.job_id, JobEvent.stage).order_by(JobEvent.id)):
            history.stages.setdefault(job_id, []).append(stage)
        for reason, amount in session.execute(select(Payment.reason, Payment.amount_wei).where(Payment.kind == "credited")):
            key = PaymentReason(reason)
            history.credits[key] = history.credits.get(key, 0) + amount
        budget = select(BudgetEvent.dataset_id, BudgetEvent.remaining_epsilon, BudgetEvent.total_epsilon).order_by(BudgetEvent.id)
        for dataset_id, remaining, total in session.execute(budget):
            history.ledger[dataset_id] = (remaining, total)
    return history
