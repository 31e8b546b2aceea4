"""The chain indexer: rows match the chain (every event the contracts emit), and a crash or restart loses and duplicates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE, DatasetStatus, JobStatus, epsilon_units
from sterling.localnet import LocalNet
from oracle.index_db import (
    BOOKKEEPING_TABLES,
    SCHEMA_VERSION,
    Base,
    BudgetEvent,
    ChainEvent,
    Cursor,
    Dataset,
    Enclave,
    EnclaveRevocation,
    IndexDatabase,
    IndexMeta,
    Job,
    JobEvent,
    MarketState,
    MarketTotals,
    OperatorStake,
    Payment,
    cursor_key,
)
from oracle.fold import DecodedLog, IndexState, PaymentReason
from oracle.indexer import Indexer, IndexerChainMismatch
from tests.conftest import TOY_SCHEMA, toy_spec, toy_terms
from tests.gateway.conftest import list_toy, run_toy_job
from tests.postgres import index_url

MARKET_EVENTS = {
    "DatasetListed": BudgetEvent, "EpsilonReserved": BudgetEvent, "EpsilonReleased": BudgetEvent, "BudgetDebited": BudgetEvent,
    "BudgetToppedUp": BudgetEvent, "TermsUpdated": BudgetEvent,
    "JobCreated": JobEvent, "JobClaimed": JobEvent, "ResultSubmitted": JobEvent, "JobExpired": JobEvent, "JobCancelled": JobEvent,
    "LeaseRenewed": JobEvent, "ClaimReleased": JobEvent, "ClaimCharged": JobEvent, "StakeSlashed": JobEvent,
    "PaymentCredited": Payment, "Withdrawn": Payment,
    "StakeDeposited": None, "UnstakeRequested": None, "StakeWithdrawn": None,
    "DatasetStatusChanged": None, "AccessRestricted": None, "ConsumerAllowed": None, "ConsumerDisallowed": None,
    "ModelAllowed": None, "ModelDisallowed": None, "Paused": None, "Unpaused": None,
}  # fmt: skip
REGISTRY_EVENTS = ("MeasurementApproved", "MeasurementRevoked", "EnclaveRegistered", "EnclaveRevoked")


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

    def _apply(self, session: Session, state: IndexState, log: DecodedLog) -> None:
        self.applied += 1
        if self.applied == self.crash_at:
            raise RuntimeError("simulated crash")
        super()._apply(session, state, log)


def test_index_matches_the_chain_and_survives_crash_and_restart(fresh_localnet: LocalNet, tmp_path: Path) -> None:
    # A private chain: the index is compared with the whole chain from its deployment, in batches of
    # three blocks, which on the session's shared chain grows with every test that ran before (380 s).
    net = fresh_localnet
    url = index_url(tmp_path)
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
        result = net.market.result_submitted(created.job_id)
        assert indexed_job.epsilon_spent == job.epsilon_spent and indexed_job.result_hash == "0x" + result.result_hash.hex()
        assert indexed_job.model_hash == "0x" + result.model_hash.hex()
        assert [(d.dataset_id, d.price_wei) for d in indexed_job.datasets] == list(zip(job.dataset_ids, job.prices, strict=True))
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
    db = IndexDatabase(index_url(tmp_path))
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
        # The claimed job ran out of time holding the job: its operator's stake is slashed to the provider.
        for job_id, stages in ((open_job.job_id, ["created", "expired"]), (claimed.job_id, ["created", "claimed", "slashed", "expired"])):
            assert session.scalars(select(JobEvent.stage).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all() == stages
            job = session.get(Job, job_id)
            assert job is not None and job.status == JobStatus.EXPIRED
        refunds = session.scalars(select(Payment.amount_wei).where(Payment.account == consumer.account.address).order_by(Payment.id)).all()
        assert refunds == [open_job.escrow, claimed.escrow]
    db.close()


def assert_matches_chain(db: IndexDatabase, net: LocalNet) -> None:
    """Every dataset, job, the market's pause flag and every revocation in the index equal the chain's views."""
    with db.session() as session:
        for row in session.scalars(select(Dataset)):
            chain = net.market.dataset(row.id)
            assert row.provider == chain.provider and row.content_hash == "0x" + chain.content_hash.hex()
            assert (row.price_wei, row.max_epsilon_per_job, row.total_epsilon, row.max_delta, row.expiry) == chain.terms.as_tuple()
            assert (row.spent_epsilon, row.reserved_epsilon) == (chain.epsilon_spent, chain.epsilon_reserved)
            assert row.remaining_epsilon == net.market.remaining_epsilon(row.id)
            assert (row.status, row.restricted, row.models_restricted) == (int(chain.status), chain.restricted, chain.models_restricted)
            for entry in row.consumers:
                assert net.market.is_consumer_allowed(row.id, entry.consumer)
            for model in row.models:
                assert net.market.is_model_allowed(row.id, bytes.fromhex(model.model_spec_hash[2:]))
        for job in session.scalars(select(Job)):
            chain_job = net.market.job(job.id)
            assert (job.consumer, job.status, job.escrow_wei) == (chain_job.consumer, int(chain_job.status), chain_job.escrow)
            assert [(d.dataset_id, d.price_wei) for d in job.datasets] == list(zip(chain_job.dataset_ids, chain_job.prices, strict=True))
            assert (job.claim_deadline, job.lease_expiry, job.charges) == (chain_job.claim_deadline, chain_job.lease_expiry, chain_job.charges)
            if chain_job.status == JobStatus.CLAIMED:
                assert (job.enclave, job.operator) == (chain_job.enclave, chain_job.operator)
        key = cursor_key(net.chain.chain_id, net.market.address, net.registry.address)
        for stake in session.scalars(select(OperatorStake)):
            on_chain = net.market.stake_of(stake.operator)
            assert (stake.amount, stake.unbonding_end) == (on_chain.amount, on_chain.unbonding_end)
        totals = session.get(MarketTotals, key)
        if totals is not None:
            assert (totals.locked_escrow_wei, totals.total_stake_wei) == (net.market.locked_escrow(), net.market.total_stake())
            assert totals.received_wei - totals.paid_out_wei == net.market.payment_balance(net.market.address)
            assert totals.received_wei - totals.paid_out_wei == totals.pending_wei + totals.locked_escrow_wei + totals.total_stake_wei
        state = session.get(MarketState, key)
        assert (state is not None and state.paused) == net.market.paused()
        revoked = set(session.scalars(select(EnclaveRevocation.signer)))
        for signer in session.scalars(select(Enclave.signer)):
            assert (signer in revoked) == net.registry.enclave_of(signer).revoked


def index_state(db: IndexDatabase) -> dict[str, list[str]]:
    """Every row of every table, for comparing two indexes of the same chain.

    An allow-list entry's surrogate ``id`` is left out: an entry removed and added back within one
    indexed range keeps its row, across two ranges it gets a new one (nothing reads that id).
    """
    with db.session() as session:
        return {
            table.name: sorted(
                repr(tuple(row))
                for row in session.execute(
                    select(*(c for c in table.columns if not (c.name == "id" and table.name in ("dataset_consumers", "dataset_models"))))
                )
            )
            for table in Base.metadata.sorted_tables
            if table.name not in BOOKKEEPING_TABLES - {"indexer_cursor"}  # where each poll stopped, not what the chain says
        }


def test_provider_changes_cancellation_pause_and_revocation_are_indexed_from_the_logs_alone(fresh_localnet: LocalNet, tmp_path: Path) -> None:
    net = fresh_localnet
    db = IndexDatabase(index_url(tmp_path / "one"))
    db.create_schema()
    indexer = Indexer(db, market=net.market, registry=net.registry, start_block=net.deployment.block, batch_blocks=4)
    provider, consumer, other = (net.chain.new_account() for _ in range(3))
    spec_hash = bytes.fromhex(net.blobs.put(toy_spec().to_bytes()))
    other_hash = bytes(range(32))

    # A listing with both allow-lists: AccessRestricted, then one ConsumerAllowed and one ModelAllowed, in its transaction.
    dataset_id, listed = net.market.list_dataset(
        provider, content_hash=bytes(range(1, 33)), schema_hash=TOY_SCHEMA.hash(), uri="sterling-blob:",
        terms=toy_terms(price=10**17, total=10.0), allowed_consumers=(consumer.address,), allowed_models=(spec_hash,),
    )  # fmt: skip
    indexer.poll_once()
    with db.session() as session:
        names = session.scalars(select(ChainEvent.name).where(ChainEvent.tx_hash == listed.tx_hash).order_by(ChainEvent.log_index)).all()
        assert names == ["DatasetListed", "AccessRestricted", "ConsumerAllowed", "ModelAllowed"]
        row = session.get(Dataset, dataset_id)
        assert row is not None and (row.status, row.restricted, row.models_restricted) == (DatasetStatus.ACTIVE, True, True)
        assert [c.consumer for c in row.consumers] == [consumer.address] and [m.model_spec_hash for m in row.models] == ["0x" + spec_hash.hex()]

    # The lists change entry by entry (allowing twice changes nothing); the flags change apart from them.
    net.market.set_consumers_allowed(provider, dataset_id, [other.address], True)
    net.market.set_consumers_allowed(provider, dataset_id, [consumer.address], False)
    net.market.set_consumers_allowed(provider, dataset_id, [other.address], True)
    net.market.set_models_allowed(provider, dataset_id, [other_hash], True)
    net.market.set_models_allowed(provider, dataset_id, [spec_hash], False)
    indexer.poll_once()
    assert_matches_chain(db, net)
    with db.session() as session:
        row = session.get(Dataset, dataset_id)
        assert row is not None and [c.consumer for c in row.consumers] == [other.address]
        assert [m.model_spec_hash for m in row.models] == ["0x" + other_hash.hex()]
    assert not net.market.is_consumer_allowed(dataset_id, consumer.address) and not net.market.is_model_allowed(dataset_id, spec_hash)
    net.market.set_models_allowed(provider, dataset_id, [spec_hash], True)
    net.market.set_access_restrictions(provider, dataset_id, consumers=False, models=True)

    # New terms with a smaller total budget, then a top-up: the ledger follows the total.
    net.market.update_terms(provider, dataset_id, toy_terms(price=2 * 10**17, total=8.0))
    net.market.top_up_budget(provider, dataset_id, epsilon_units(4))
    indexer.poll_once()
    assert_matches_chain(db, net)
    with db.session() as session:
        row = session.get(Dataset, dataset_id)
        assert row is not None and (row.restricted, row.models_restricted, row.price_wei) == (False, True, 2 * 10**17)
        assert [m.model_spec_hash for m in row.models] == ["0x" + other_hash.hex(), "0x" + spec_hash.hex()]
        history = session.execute(
            select(BudgetEvent.kind, BudgetEvent.epsilon, BudgetEvent.total_epsilon, BudgetEvent.remaining_epsilon)
            .where(BudgetEvent.dataset_id == dataset_id).order_by(BudgetEvent.id)
        ).all()  # fmt: skip
        ten, eight, four, twelve = (epsilon_units(x) for x in (10, 8, 4, 12))
        assert history == [("listed", ten, ten, ten), ("terms_updated", eight, eight, eight), ("topped_up", four, twelve, twelve)]

    # A job snapshots the price; what the consumer sent above it comes back at once as change.
    now = net.chain.now()
    change = 5 * 10**15
    job_id, created = net.market.create_job(
        consumer, dataset_ids=[dataset_id], model_spec_hash=spec_hash, epsilon=EPSILON_SCALE, delta=10**13, consumer_key=bytes(32),
        worker_fee=10**16, claim_deadline=now + 3600, completion_deadline=now + 7200, max_total_price=2 * 10**17 + 10**16 + change,  # type: ignore[arg-type]
    )  # fmt: skip
    net.market.update_terms(provider, dataset_id, toy_terms(price=3 * 10**17, total=12.0))  # the job keeps its price
    net.market.set_dataset_paused(provider, dataset_id, True)
    indexer.poll_once()
    assert_matches_chain(db, net)
    with db.session() as session:
        row = session.get(Dataset, dataset_id)
        assert row is not None and (row.status, row.price_wei, row.reserved_epsilon) == (DatasetStatus.PAUSED, 3 * 10**17, EPSILON_SCALE)
        reserved = session.scalar(select(BudgetEvent).where(BudgetEvent.job_id == job_id, BudgetEvent.kind == "reserved"))
        assert reserved is not None and reserved.price_wei == 2 * 10**17 and reserved.tx_hash == created.tx_hash
        job = session.get(Job, job_id)
        assert job is not None and [(d.dataset_id, d.price_wei) for d in job.datasets] == [(dataset_id, 2 * 10**17)]
        credited = session.execute(select(Payment.account, Payment.reason, Payment.amount_wei).where(Payment.job_id == job_id)).all()
        assert credited == [(consumer.address, PaymentReason.CHANGE, change)]

    # Cancelled (allowed while the dataset is paused): ε released and the escrow refunded; then delisted.
    net.market.cancel_job(consumer, job_id)
    net.market.set_dataset_paused(provider, dataset_id, False)
    net.market.delist_dataset(provider, dataset_id)
    # The market's emergency stop goes on, off and on; governance revokes the trainer (twice: idempotent).
    net.market.pause(net.governance)
    net.market.unpause(net.governance)
    net.market.pause(net.governance)
    net.registry.revoke_enclave(net.governance, net.worker.signer)
    revoked = net.registry.revoke_enclave(net.governance, net.worker.signer)
    indexer.poll_once()
    assert_exact(db, net, indexer)
    assert_matches_chain(db, net)
    escrow = 2 * 10**17 + 10**16
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None and (job.status, job.refund_wei) == (JobStatus.CANCELLED, escrow)
        stages = session.execute(select(JobEvent.stage, JobEvent.amount_wei).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
        assert stages == [("created", escrow), ("cancelled", escrow)]
        credited = session.execute(select(Payment.reason, Payment.amount_wei).where(Payment.job_id == job_id).order_by(Payment.id)).all()
        assert credited == [(PaymentReason.CHANGE, change), (PaymentReason.REFUND, escrow)]
        row = session.get(Dataset, dataset_id)
        assert row is not None and (row.status, row.reserved_epsilon, row.remaining_epsilon) == (DatasetStatus.DELISTED, 0, epsilon_units(12))
        kinds = session.scalars(select(BudgetEvent.kind).where(BudgetEvent.dataset_id == dataset_id).order_by(BudgetEvent.id)).all()
        assert kinds == ["listed", "terms_updated", "topped_up", "reserved", "terms_updated", "released"]
        state = session.get(MarketState, indexer.key)
        assert state is not None and state.paused and state.changed_by == net.governance.address
        revocation = session.get(EnclaveRevocation, net.worker.signer)
        assert revocation is not None and revocation.tx_hash != revoked.tx_hash  # the first revocation is the one kept

    # Replayed from the start, or built anew in another database: the same index.
    snapshot = index_state(db)
    with db.transaction() as session:
        session.execute(update(Cursor).values(last_block=net.deployment.block - 1))
    indexer.poll_once()
    assert index_state(db) == snapshot
    rebuilt = IndexDatabase(index_url(tmp_path / "two"))
    rebuilt.create_schema()
    Indexer(rebuilt, market=net.market, registry=net.registry, start_block=net.deployment.block, batch_blocks=1000).poll_once()
    assert index_state(rebuilt) == snapshot
    rebuilt.close()
    db.close()


def test_an_index_of_another_schema_version_is_rebuilt(tmp_path: Path) -> None:
    db = IndexDatabase(index_url(tmp_path))
    db.create_schema()
    with db.transaction() as session:
        session.add(Cursor(key="k", chain_id=1, market_address="m", registry_address="r", start_block=1, start_block_hash="h", last_block=9))
        session.merge(IndexMeta(key="schema_version", value="1"))
    db.create_schema()  # an index written by an older gateway: dropped, to be read again from the chain
    with db.session() as session:
        assert session.get(Cursor, "k") is None
        meta = session.get(IndexMeta, "schema_version")
        assert meta is not None and meta.value == str(SCHEMA_VERSION)
        session.add(Cursor(key="k", chain_id=1, market_address="m", registry_address="r", start_block=1, start_block_hash="h", last_block=9))
        session.commit()
    db.create_schema()  # the current version: kept
    with db.session() as session:
        assert session.get(Cursor, "k") is not None
    db.close()
