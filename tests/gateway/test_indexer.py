"""The chain indexer: rows match the chain, and a crash or restart loses and duplicates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE, JobStatus
from marketplace.localnet import LocalNet
from oracle.index_db import (
    BudgetEvent,
    ChainEvent,
    Cursor,
    Dataset,
    Enclave,
    IndexDatabase,
    Job,
    JobEvent,
    Payment,
    default_url,
)
from oracle.indexer import DecodedLog, Indexer, IndexerChainMismatch
from tests.conftest import toy_spec
from tests.gateway.conftest import list_toy, run_toy_job

MARKET_EVENTS = {
    "DatasetListed": BudgetEvent, "EpsilonReserved": BudgetEvent, "EpsilonReleased": BudgetEvent, "BudgetDebited": BudgetEvent,
    "JobCreated": JobEvent, "JobClaimed": JobEvent, "ResultSubmitted": JobEvent, "JobExpired": JobEvent,
    "PaymentCredited": Payment, "Withdrawn": Payment, "ConsumerAllowed": None,
}  # fmt: skip
REGISTRY_EVENTS = ("MeasurementApproved", "MeasurementRevoked", "EnclaveRegistered")


def chain_counts(net: LocalNet, start: int, end: int) -> dict[str, int]:
    """How many of each event the chain holds in ``start … end``, read through web3's own log filters."""
    counts = {name: len(net.market.contract.events[name]().get_logs(from_block=start, to_block=end)) for name in MARKET_EVENTS}
    for name in REGISTRY_EVENTS:
        counts[name] = len(net.registry.contract.events[name]().get_logs(from_block=start, to_block=end))
    return counts


def count(session: Session, table: type) -> int:
    return session.scalar(select(func.count()).select_from(table)) or 0


def assert_exact(db: IndexDatabase, net: LocalNet, indexer: Indexer) -> None:
    """Every event up to the cursor is in the index exactly once, and nothing else is."""
    end = indexer.last_block()
    expected = chain_counts(net, indexer.start_block, end)
    with db.session() as session:
        assert count(session, ChainEvent) == sum(expected.values())
        by_name = dict(session.execute(select(ChainEvent.name, func.count()).group_by(ChainEvent.name)).all())
        assert {k: v for k, v in by_name.items() if v} == {k: v for k, v in expected.items() if v}
        for table in (BudgetEvent, JobEvent, Payment):
            assert count(session, table) == sum(n for name, n in expected.items() if MARKET_EVENTS.get(name) is table), table
        assert count(session, Dataset) == expected["DatasetListed"]
        assert count(session, Job) == expected["JobCreated"]
        assert count(session, Enclave) == len({log["args"]["signer"] for log in net.registry.contract.events.EnclaveRegistered().get_logs(from_block=0)})
        unique_logs = session.scalar(select(func.count()).select_from(select(ChainEvent.tx_hash, ChainEvent.log_index).distinct().subquery()))
        assert unique_logs == count(session, ChainEvent)


class CrashingIndexer(Indexer):
    """Dies while applying the n-th event of a poll, like a process killed mid-transaction."""

    def __init__(self, *args: object, crash_at: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.crash_at = crash_at
        self.applied = 0

    def _apply(self, session: Session, log: DecodedLog) -> bool:
        self.applied += 1
        if self.applied == self.crash_at:
            raise RuntimeError("simulated crash")
        return super()._apply(session, log)


def test_index_matches_the_chain_and_survives_crash_and_restart(localnet: LocalNet, tmp_path: Path) -> None:
    net = localnet
    url = default_url(tmp_path)
    db = IndexDatabase(url)
    db.create_schema()
    first = Indexer(db, market=net.market, registry=net.registry, start_block=net.deployment.block, batch_blocks=3)
    a, provider_a = list_toy(net, 21, price=10**17)
    b, _ = list_toy(net, 22, price=2 * 10**17, total=5.0)
    _, created = run_toy_job(net, [a.dataset_id, b.dataset_id], fee=10**16)
    net.market.withdraw(provider_a)
    assert len(first.poll_once()) > 1  # several bounded batches
    assert_exact(db, net, first)

    job = net.market.job(created.job_id)
    with db.session() as session:
        for listed in (a, b):
            row = session.get(Dataset, listed.dataset_id)
            assert row is not None and row.content_hash == "0x" + listed.content_hash.hex()
            assert row.remaining_epsilon == net.market.remaining_epsilon(listed.dataset_id)
            assert row.spent_epsilon == job.epsilon_spent and row.reserved_epsilon == 0
            history = session.scalars(select(BudgetEvent).where(BudgetEvent.dataset_id == listed.dataset_id).order_by(BudgetEvent.id)).all()
            assert [(e.kind, e.job_id) for e in history] == [("listed", None), ("reserved", created.job_id), ("debited", created.job_id)]
            assert history[1].epsilon == EPSILON_SCALE and history[-1].remaining_epsilon == row.remaining_epsilon
        indexed_job = session.get(Job, created.job_id)
        assert indexed_job is not None and indexed_job.status == JobStatus.COMPLETED
        assert indexed_job.epsilon_spent == job.epsilon_spent and indexed_job.result_hash == "0x" + job.result_hash.hex()
        assert [d.dataset_id for d in indexed_job.datasets] == [a.dataset_id, b.dataset_id]
        stages = session.scalars(select(JobEvent.stage).where(JobEvent.job_id == created.job_id).order_by(JobEvent.id)).all()
        assert stages == ["created", "claimed", "settled"]
        paid = session.execute(select(Payment.account, Payment.kind, Payment.amount_wei).where(Payment.job_id == created.job_id)).all()
        assert sorted(paid) == sorted([(provider_a.address, "credited", 10**17), (b_provider(net, b.dataset_id), "credited", 2 * 10**17), (net.operator.address, "credited", 10**16)])
        withdrawn = session.scalars(select(Payment.amount_wei).where(Payment.account == provider_a.address, Payment.kind == "withdrawn")).all()
        assert withdrawn == [10**17]

    # More events while no indexer runs; then an indexer that dies in the middle of a transaction.
    c, _ = list_toy(net, 23, price=3 * 10**17)
    Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs).create_job(
        [c.dataset_id], toy_spec(), epsilon=0.5, delta=1e-5, worker_fee=0  # type: ignore[arg-type]
    )
    cursor_before = first.last_block()
    with db.session() as session:
        before = {t: count(session, t) for t in (ChainEvent, Dataset, BudgetEvent, Job, JobEvent, Payment)}
    crashing = CrashingIndexer(db, market=net.market, registry=net.registry, start_block=net.deployment.block, batch_blocks=1000, crash_at=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.poll_once()
    assert crashing.last_block() == cursor_before  # the half-applied batch was rolled back
    with db.session() as session:
        assert {t: count(session, t) for t in before} == before
    db.close()

    # A restarted process: new engine, new indexer, same database.
    reopened = IndexDatabase(url)
    second = Indexer(reopened, market=net.market, registry=net.registry, start_block=net.deployment.block)
    assert second.last_block() == cursor_before  # the cursor persisted
    second.poll_once()
    assert second.last_block() == net.chain.w3.eth.block_number
    assert_exact(reopened, net, second)

    # Replaying from the start (a cursor that fell behind) changes nothing.
    with reopened.transaction() as session:
        session.execute(update(Cursor).values(last_block=net.deployment.block - 1))
    second.poll_once()
    assert_exact(reopened, net, second)
    with reopened.session() as session:
        assert session.get(Dataset, c.dataset_id) is not None

    # An index built from another chain is refused rather than mixed.
    with reopened.transaction() as session:
        session.execute(update(Cursor).values(start_block_hash="0x" + "00" * 32))
    with pytest.raises(IndexerChainMismatch, match="reset"):
        Indexer(reopened, market=net.market, registry=net.registry, start_block=net.deployment.block).poll_once()
    reopened.close()


def b_provider(net: LocalNet, dataset_id: int) -> str:
    return net.market.dataset(dataset_id).provider


def test_expired_jobs_release_budget_and_refund_in_the_index(fresh_localnet: LocalNet, tmp_path: Path) -> None:
    net = fresh_localnet
    db = IndexDatabase(default_url(tmp_path))
    db.create_schema()
    indexer = Indexer(db, market=net.market, registry=net.registry, start_block=net.deployment.block)
    listed, _ = list_toy(net, 31)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    open_job = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=10**16,  # type: ignore[arg-type]
                                   claim_window=600, completion_window=1200)  # fmt: skip
    claimed = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0,  # type: ignore[arg-type]
                                  claim_window=600, completion_window=1200)  # fmt: skip
    net.market.claim_job(net.operator, claimed.job_id, net.worker.signer)
    indexer.poll_once()
    net.chain.advance_time(1300)
    net.market.expire_job(consumer.account, open_job.job_id)
    net.market.expire_job(consumer.account, claimed.job_id)
    indexer.poll_once()
    assert_exact(db, net, indexer)
    with db.session() as session:
        row = session.get(Dataset, listed.dataset_id)
        assert row is not None and row.remaining_epsilon == net.market.remaining_epsilon(listed.dataset_id) == 9 * EPSILON_SCALE
        kinds = session.scalars(select(BudgetEvent.kind).where(BudgetEvent.dataset_id == listed.dataset_id).order_by(BudgetEvent.id)).all()
        assert kinds == ["listed", "reserved", "reserved", "released", "debited"]
        for job_id, stages in ((open_job.job_id, ["created", "expired"]), (claimed.job_id, ["created", "claimed", "expired"])):
            assert session.scalars(select(JobEvent.stage).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all() == stages
            job = session.get(Job, job_id)
            assert job is not None and job.status == JobStatus.EXPIRED
        refunds = session.scalars(select(Payment.amount_wei).where(Payment.account == consumer.account.address).order_by(Payment.id)).all()
        assert refunds == [open_job.escrow, claimed.escrow]
    db.close()
