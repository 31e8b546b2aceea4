"""Claim leases, re-claims, releases and operator stakes on a real chain, through the shipped indexer.

One embedded chain (py-evm) plays a scenario with every new market event: a lease renewed, a
lapsed claim re-claimed (its ε charged, its operator slashed), a claim released on a key
manager's statement and claimed again, a claimed job expired with a slash, stakes deposited,
unbonded and withdrawn. The index built while the chain moves (small ranges, polled after every
step) must equal a rebuild from the chain in one go, and both must equal the contract views
(``job``, ``remainingEpsilon``, ``stakeOf``, ``totalStake``, ``lockedEscrow``,
``pendingWithdrawal``, the market's balance).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from sqlalchemy import Integer, select

from enclave_worker.trusted.receipt import Receipt, sign_receipt
from marketplace.chain import Chain, embedded
from marketplace.contracts import (
    CERTIFICATE_TYPES,
    Certificate,
    JobStatus,
    MarketClient,
    RegistryClient,
    Role,
    Terms,
    deploy,
)
from oracle.fold import PaymentReason
from oracle.index_db import (
    BOOKKEEPING_TABLES,
    Base,
    Dataset,
    IndexDatabase,
    Job,
    JobEvent,
    MarketTotals,
    OperatorStake,
    Payment,
    cursor_key,
)
from oracle.indexer import Indexer
from tests.postgres import index_url

EPS = 10**6
LEASE = 100
UNBONDING = 10000
TRAINER_MEASUREMENT = b"\x01" * 32
KM_MEASUREMENT = b"\x02" * 32
CLAIM_RELEASE_TYPES = {
    "ClaimRelease": [
        {"name": "jobId", "type": "uint256"},
        {"name": "enclave", "type": "address"},
        {"name": "charges", "type": "uint16"},
    ]
}


@dataclass
class Scenario:
    chain: Chain
    market: MarketClient
    registry: RegistryClient
    start_block: int
    live: IndexDatabase
    """The index polled after every step, in small ranges."""
    tmp: Path
    accounts: dict[str, LocalAccount] = field(default_factory=dict)
    jobs: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, int] = field(default_factory=dict)

    def account(self, name: str) -> LocalAccount:
        return self.accounts[name]


def _register(s: Scenario, verifier: LocalAccount, enclave: LocalAccount, operator: LocalAccount, role: Role) -> None:
    measurement = TRAINER_MEASUREMENT if role is Role.TRAINER else KM_MEASUREMENT
    cert = Certificate(role, measurement, enclave.address, b"\x42" * 32, operator.address, s.chain.now() + 10**6)
    signed = verifier.sign_typed_data(s.registry.domain(), CERTIFICATE_TYPES, cert.message())
    s.registry.register(operator, cert, bytes(signed.signature))


def _release_signature(s: Scenario, key_manager: LocalAccount, job_id: int, enclave: str, charges: int) -> bytes:
    domain = {"name": "SterlingJobMarket", "version": "1", "chainId": s.chain.chain_id, "verifyingContract": s.market.address}
    message = {"jobId": job_id, "enclave": enclave, "charges": charges}
    return bytes(key_manager.sign_typed_data(domain, CLAIM_RELEASE_TYPES, message).signature)


def _new_indexer(s: Scenario, db: IndexDatabase, batch_blocks: int) -> Indexer:
    return Indexer(db, market=s.market, registry=s.registry, start_block=s.start_block, batch_blocks=batch_blocks)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    chain = embedded()
    governance = chain.new_account()
    deployment = deploy(chain, governance, claim_lease=LEASE, unbonding_period=UNBONDING)
    tmp = tmp_path_factory.mktemp("leases")
    live = IndexDatabase(index_url(tmp / "live"))
    live.create_schema()
    s = Scenario(
        chain=chain, market=MarketClient(chain, deployment.market), registry=RegistryClient(chain, deployment.registry),
        start_block=deployment.block, live=live, tmp=tmp,
    )  # fmt: skip
    indexer = _new_indexer(s, live, batch_blocks=2)

    def step() -> None:
        indexer.poll_once()

    names = ("verifier", "operator_a", "operator_b", "trainer_a", "trainer_b", "key_manager", "provider_1", "provider_2", "consumer")
    s.accounts = {name: chain.new_account() for name in names}
    s.accounts["governance"] = governance
    a = s.account
    s.registry.approve_measurement(governance, Role.TRAINER, TRAINER_MEASUREMENT)
    s.registry.approve_measurement(governance, Role.KEY_MANAGER, KM_MEASUREMENT)
    s.registry.add_verifier(governance, a("verifier").address)
    _register(s, a("verifier"), a("trainer_a"), a("operator_a"), Role.TRAINER)
    _register(s, a("verifier"), a("trainer_b"), a("operator_b"), Role.TRAINER)
    _register(s, a("verifier"), a("key_manager"), governance, Role.KEY_MANAGER)
    step()
    for name, provider, price in (("d1", "provider_1", 100), ("d2", "provider_2", 300)):
        s.datasets[name], _ = s.market.list_dataset(
            a(provider), content_hash=keccak(name.encode()), schema_hash=b"\x03" * 32, uri=f"blob://{name}",
            terms=Terms(price_per_job=price, max_epsilon_per_job=2 * EPS, total_epsilon_budget=10 * EPS, max_delta=10**13),
        )  # fmt: skip
    s.market.deposit_stake(a("operator_a"), 1000)
    s.market.ensure_stake(a("operator_b"), 500)
    step()

    def create(dataset_names: list[str]) -> int:
        now = s.chain.now()
        job_id, _ = s.market.create_job(
            a("consumer"), dataset_ids=[s.datasets[n] for n in dataset_names], model_spec_hash=b"\x07" * 32, epsilon=EPS,
            delta=10**12, consumer_key=b"\x09" * 32, worker_fee=5, claim_deadline=now + 1000, completion_deadline=now + 4000,
            max_total_price=10**6,  # the change is credited back to the consumer
        )  # fmt: skip
        return job_id

    # Job "charged": claimed by A, renewed, lapsed, re-claimed by B: ε charged, A slashed to the providers.
    s.jobs["charged"] = create(["d1", "d2"])
    s.market.claim_job(a("operator_a"), s.jobs["charged"], a("trainer_a").address)
    step()
    chain.advance_time(50)
    s.market.renew_lease(a("operator_a"), s.jobs["charged"])
    step()
    chain.advance_time(LEASE + 20)
    s.market.claim_job(a("operator_b"), s.jobs["charged"], a("trainer_b").address)
    step()

    # Job "released": claimed by A, given back on the key manager's statement, claimed by B and completed.
    s.jobs["released"] = create(["d1"])
    s.market.claim_job(a("operator_a"), s.jobs["released"], a("trainer_a").address)
    step()
    signature = _release_signature(s, a("key_manager"), s.jobs["released"], a("trainer_a").address, 0)
    s.market.release_claim(a("operator_a"), s.jobs["released"], signature)
    step()
    s.market.claim_job(a("operator_b"), s.jobs["released"], a("trainer_b").address)
    receipt = Receipt(
        job_id=s.jobs["released"], datasets_hash=keccak(keccak(b"d1")), model_hash=b"\x0a" * 32, result_hash=b"\x0b" * 32,
        metrics_hash=b"\x0c" * 32, epsilon_spent=EPS // 2,
    )  # fmt: skip
    signed = sign_receipt(a("trainer_b"), receipt, chain_id=chain.chain_id, market=s.market.address_bytes)
    s.market.submit_result(a("operator_b"), receipt, signed)
    step()

    # Job "expired": claimed by A, abandoned for a whole lease after its lapse: expired, A slashed.
    s.jobs["expired"] = create(["d2"])
    s.market.claim_job(a("operator_a"), s.jobs["expired"], a("trainer_a").address)
    chain.advance_time(2 * LEASE + 10)
    s.market.expire_job(a("consumer"), s.jobs["expired"])
    step()

    # Job "cancelled", and A leaves: unstake, unbonding, stake withdrawn, everything withdrawn.
    s.jobs["cancelled"] = create(["d1"])
    s.market.cancel_job(a("consumer"), s.jobs["cancelled"])
    s.market.request_unstake(a("operator_a"))
    step()
    chain.advance_time(UNBONDING + 1)
    s.market.withdraw_stake(a("operator_a"))
    s.market.withdraw(a("operator_a"))
    s.market.withdraw(a("provider_1"))
    step()
    yield s
    live.close()


def _rows(db: IndexDatabase) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows, without surrogate ids, in a stable order."""
    tables: dict[str, list[dict[str, Any]]] = {}
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name in BOOKKEEPING_TABLES - {"indexer_cursor"}:  # where each poll stopped, not what the chain says
                continue
            skip = {c.name for c in table.columns if c.name == "id" and isinstance(c.type, Integer)}
            rows = [{k: v for k, v in row._mapping.items() if k not in skip} for row in connection.execute(table.select())]
            tables[table.name] = sorted(rows, key=repr)
    return tables


def test_the_live_index_equals_a_rebuild_from_the_chain(scenario: Scenario) -> None:
    rebuilt = IndexDatabase(index_url(scenario.tmp / "rebuilt"))
    rebuilt.create_schema()
    _new_indexer(scenario, rebuilt, batch_blocks=10_000).poll_once()
    live, fresh = _rows(scenario.live), _rows(rebuilt)
    assert live.keys() == fresh.keys()
    for table in live:
        assert live[table] == fresh[table], table
    assert len(live["operator_stakes"]) == 2 and len(live["market_totals"]) == 1
    rebuilt.close()


def test_the_index_equals_the_contract_views(scenario: Scenario) -> None:
    s, market = scenario, scenario.market
    with s.live.session() as session:
        for job in session.scalars(select(Job)):
            view = market.job(job.id)
            indexed = (JobStatus(job.status), job.enclave, job.operator, job.claim_deadline, job.lease_expiry, job.charges)
            holder = view.enclave if int(view.enclave, 16) else None
            operator = view.operator if int(view.operator, 16) else None
            if view.status in (JobStatus.COMPLETED, JobStatus.EXPIRED):  # the view keeps the last holder
                assert (job.enclave, job.operator) == (holder, operator)
            assert indexed == (view.status, holder, operator, view.claim_deadline, view.lease_expiry, view.charges), job.id
            assert (job.epsilon_spent or 0) == view.epsilon_spent
        for dataset in session.scalars(select(Dataset)):
            record = market.dataset(dataset.id)
            assert (dataset.spent_epsilon, dataset.reserved_epsilon) == (record.epsilon_spent, record.epsilon_reserved)
            assert dataset.remaining_epsilon == market.remaining_epsilon(dataset.id)
        stakes = {row.operator: row for row in session.scalars(select(OperatorStake))}
        for name in ("operator_a", "operator_b"):
            address = s.account(name).address
            view_stake = market.stake_of(address)
            assert (stakes[address].amount, stakes[address].unbonding_end) == (view_stake.amount, view_stake.unbonding_end)
        totals = session.get(MarketTotals, cursor_key(s.chain.chain_id, market.address, s.registry.address))
        assert totals is not None
        accounts = {p.account for p in session.scalars(select(Payment))}
        assert totals.pending_wei == sum(market.pending_withdrawal(account) for account in accounts)
        for account in accounts:
            credited = session.scalars(select(Payment).where(Payment.account == account)).all()
            assert sum(p.amount_wei if p.kind == "credited" else -p.amount_wei for p in credited) == market.pending_withdrawal(account)
        assert (totals.locked_escrow_wei, totals.total_stake_wei) == (market.locked_escrow(), market.total_stake())
        balance = totals.received_wei - totals.paid_out_wei
        assert balance == s.chain.balance(market.address) == totals.pending_wei + totals.locked_escrow_wei + totals.total_stake_wei


def test_charges_releases_and_slashes_are_in_the_history(scenario: Scenario) -> None:
    s = scenario
    a = s.account
    with s.live.session() as session:
        stages = {
            name: [e.stage for e in session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))]
            for name, job_id in s.jobs.items()
        }
        assert stages == {
            "charged": ["created", "claimed", "renewed", "charged", "slashed", "claimed"],
            "released": ["created", "claimed", "released", "claimed", "settled"],
            "expired": ["created", "claimed", "slashed", "expired"],
            "cancelled": ["created", "cancelled"],
        }
        charged = session.get(Job, s.jobs["charged"])
        assert charged is not None and (charged.charges, charged.enclave) == (1, a("trainer_b").address)
        reasons = [
            (p.account, p.reason, p.amount_wei)
            for p in session.scalars(select(Payment).where(Payment.job_id == s.jobs["charged"]).order_by(Payment.id))
        ]
        assert reasons[1:] == [  # after the change at creation: A's stake slashed in proportion to the prices
            (a("provider_1").address, PaymentReason.SLASH, 100),
            (a("provider_2").address, PaymentReason.SLASH, 300),
        ]
        stake_credit = session.scalars(select(Payment).where(Payment.reason == PaymentReason.STAKE)).one()
        assert (stake_credit.account, stake_credit.job_id, stake_credit.amount_wei) == (a("operator_a").address, None, 1000 - 400 - 300)
        stake_a = session.get(OperatorStake, a("operator_a").address)
        assert stake_a is not None and (stake_a.amount, stake_a.unbonding_end, stake_a.slashed_wei) == (0, 0, 700)
        d1 = session.get(Dataset, s.datasets["d1"])
        # d1: ε 1 charged for the lapsed claim + 1 reserved again (still Claimed) + 0.5 spent by the released-then-completed job.
        assert d1 is not None and (d1.spent_epsilon, d1.reserved_epsilon) == (EPS + EPS // 2, EPS)
