"""``make gas``: gas of every external state-changing function, measured on the embedded chain.

Deploys the committed artifacts on py-evm (Prague rules, web3's ``EthereumTesterProvider``), runs
each function in a realistic state, and prints one table row per call. Figures are *steady
state* unless the row says "first": the accounts involved were paid and withdrew before, the
dataset already had a job, and the market's counters are non-zero — what a running market
pays. The last line is the job-lifecycle summary the gas budget is stated in::

    lifecycle gas: one dataset N, per extra dataset M

where N = createJob + claimJob + submitResult + the provider's withdraw + the worker's
withdraw for a one-dataset job, and M = the extra gas of that lifecycle per additional dataset
of the same provider ((N₃ − N₁) / 2, with a three-dataset job). A dataset of a *new* provider
also adds that provider's own withdraw (one per withdrawal, however many jobs it covers); the
table shows that figure too. :func:`measure` returns everything for the tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_tester import EthereumTester
from eth_typing import ChecksumAddress
from eth_utils import keccak
from rich.console import Console
from rich.table import Table
from web3 import Web3
from web3.contract import Contract
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import Wei

from enclave_worker.trusted.competition import Admission, ScoreReceipt, sign
from enclave_worker.trusted.onchain import Split
from enclave_worker.trusted.receipt import RECEIPT_TYPES
from marketplace.abi import load_artifact
from marketplace.contracts import CERTIFICATE_TYPES, DEFAULT_CLAIM_LEASE, DEFAULT_UNBONDING_PERIOD

ZERO_ADDRESS = "0x" + "00" * 20
ROLE_TRAINER = 1
ROLE_KEY_MANAGER = 2
ROLE_EVALUATOR = 4
MEASUREMENT = keccak(b"sterling trainer (gas report)")
KM_MEASUREMENT = keccak(b"sterling key manager (gas report)")
EVALUATOR_MEASUREMENT = keccak(b"sterling evaluator (gas report)")
RELEASE_TYPES = {
    "ClaimRelease": [
        {"name": "jobId", "type": "uint256"},
        {"name": "enclave", "type": "address"},
        {"name": "charges", "type": "uint16"},
    ]
}
EPSILON = 10**6  # ε = 1.0
DELTA = 10**13  # δ = 1e-5
PRICE = 10**17
FEE = 10**16
ADMIN_DELAY = 2 * 24 * 3600
CLAIM_LEASE = DEFAULT_CLAIM_LEASE
UNBONDING_PERIOD = DEFAULT_UNBONDING_PERIOD
STAKE = 100 * PRICE  # covers any job of the report


@dataclass
class GasReport:
    """Measured gas: ``rows`` (function, case, gas) in order, and the lifecycle figures."""

    rows: list[tuple[str, str, int]] = field(default_factory=list)
    lifecycle: dict[int, dict[str, int]] = field(default_factory=dict)  # datasets -> per call

    def add(self, function: str, case: str, gas: int) -> int:
        self.rows.append((function, case, gas))
        return gas

    def gas(self, function: str, case: str) -> int:
        """The gas of the row ``(function, case)``."""
        return next(g for f, c, g in self.rows if (f, c) == (function, case))

    @property
    def lifecycle_one(self) -> int:
        return self.lifecycle[1]["total"]

    @property
    def per_extra_dataset(self) -> int:
        """Extra lifecycle gas per additional dataset of the same provider."""
        return (self.lifecycle[3]["total"] - self.lifecycle[1]["total"]) // 2

    @property
    def per_extra_provider_dataset(self) -> int:
        """Extra gas per additional dataset of a new provider (its own withdraw included)."""
        return self.per_extra_dataset + self.lifecycle[1]["withdraw (provider)"]


class _Market:
    """A fresh deployment on its own py-evm chain, with the actors of a job lifecycle."""

    def __init__(self, *, token: bool) -> None:
        self.tester = EthereumTester()
        self.w3 = Web3(EthereumTesterProvider(self.tester))
        accounts: Sequence[ChecksumAddress] = self.w3.eth.accounts  # web3 annotates a 1-tuple; there are ten
        self.governance, self.operator, self.consumer, self.stranger = accounts[0], accounts[1], accounts[2], accounts[3]
        self.providers = accounts[4:8]
        self.verifier = Account.from_key(keccak(b"gas report verifier"))
        self.trainer = Account.from_key(keccak(b"gas report trainer"))
        self.key_manager = Account.from_key(keccak(b"gas report key manager"))
        self.registry, registry_gas = self._deploy("EnclaveRegistry", ADMIN_DELAY, self.governance)
        self.token: Contract | None = None
        token_address = ZERO_ADDRESS
        if token:
            self.token, _ = self._deploy("TestStablecoin", test=True)
            token_address = self.token.address
        self.market, market_gas = self._deploy(
            "JobMarket", self.registry.address, token_address, ADMIN_DELAY, self.governance, CLAIM_LEASE, UNBONDING_PERIOD
        )
        self.deploy_gas = {"EnclaveRegistry": registry_gas, "JobMarket": market_gas}
        if self.token is not None:
            for who in (self.consumer, self.stranger, self.operator):
                self.send(self.token.functions.mint(who, 10**30), who)
                self.send(self.token.functions.approve(self.market.address, 2**256 - 1), who)
        self.stake_gas = self.send(
            self.market.functions.depositStake(STAKE), self.operator, 0 if self.token is not None else STAKE
        )

    def _deploy(self, name: str, *args: Any, test: bool = False) -> tuple[Contract, int]:
        artifact = load_artifact(name, test=test)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self._wait(factory.constructor(*args).transact({"from": self.governance}))
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"]), int(receipt["gasUsed"])

    def _wait(self, tx_hash: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction {tx_hash.hex()} reverted")
        return receipt

    def send(self, call: Any, sender: str, value: int = 0) -> int:
        """Send ``call`` from ``sender``; return its gas (raises if it reverts)."""
        return int(self._wait(call.transact({"from": sender, "value": value}))["gasUsed"])

    def now(self) -> int:
        return int(self.w3.eth.get_block("pending")["timestamp"])

    def travel(self, seconds: int) -> None:
        self.tester.time_travel(self.now() + seconds)

    def _domain(self, contract: Contract, name: str) -> dict[str, Any]:
        return {"name": name, "version": "1", "chainId": self.w3.eth.chain_id, "verifyingContract": contract.address}

    def register_trainer(self) -> int:
        return self._register(self.trainer.address, ROLE_TRAINER, MEASUREMENT, self.operator)

    def register_key_manager(self) -> int:
        """Approve the key-manager measurement and register the key manager (run by governance)."""
        self.send(self.registry.functions.approveMeasurement(ROLE_KEY_MANAGER, KM_MEASUREMENT), self.governance)
        return self._register(self.key_manager.address, ROLE_KEY_MANAGER, KM_MEASUREMENT, self.governance)

    def _register(self, signer: str, role: int, measurement: bytes, operator: str) -> int:
        cert = {
            "role": role,
            "measurement": measurement,
            "signer": signer,
            "encryptionKey": b"\x42" * 32,
            "operator": operator,
            "validUntil": self.now() + 365 * 24 * 3600,
        }
        signed = Account.sign_typed_data(
            self.verifier.key, self._domain(self.registry, "SterlingEnclaveRegistry"), CERTIFICATE_TYPES, cert
        )
        fields = tuple(cert[f["name"]] for f in CERTIFICATE_TYPES["Certificate"])
        return self.send(self.registry.functions.register(fields, bytes(signed.signature)), operator)

    def release(self, job_id: int) -> int:
        """releaseClaim(job_id) by the holder's operator on the key manager's statement."""
        info = self.market.functions.job(job_id).call()
        message = {"jobId": job_id, "enclave": info[2], "charges": info[16]}
        signed = Account.sign_typed_data(
            self.key_manager.key, self._domain(self.market, "SterlingJobMarket"), RELEASE_TYPES, message
        )
        return self.send(self.market.functions.releaseClaim(job_id, bytes(signed.signature)), self.operator)

    def list_dataset(self, provider: ChecksumAddress, content: bytes, *, allowed: int = 0) -> tuple[int, int]:
        terms = (PRICE, 2 * EPSILON, 1000 * EPSILON, DELTA, 0)
        consumers = [self.consumer] + [self.providers[0]] * (allowed - 1) if allowed else []
        call = self.market.functions.listDataset(keccak(content), keccak(b"schema"), "blob://" + content.hex(), terms, consumers, [])
        dataset_id = int(call.call({"from": provider}))
        return dataset_id, self.send(call, provider)

    def request(self, ids: list[int], *, change: int = 0) -> tuple[Any, ...]:
        now = self.now()
        total = FEE + PRICE * len(ids) + change
        return (ids, keccak(b"model spec"), EPSILON, DELTA, keccak(b"consumer key"), FEE, total, now + 3600, now + 7200)

    def create_job(self, ids: list[int], *, change: int = 0) -> tuple[int, int]:
        request = self.request(ids, change=change)
        call = self.market.functions.createJob(request)
        value = Wei(request[6] if self.token is None else 0)
        job_id = int(call.call({"from": self.consumer, "value": value}))
        return job_id, self.send(call, self.consumer, value)

    def claim(self, job_id: int) -> int:
        return self.send(self.market.functions.claimJob(job_id, self.trainer.address), self.operator)

    def submit(self, job_id: int) -> int:
        receipt = {
            "jobId": job_id,
            "datasetsHash": bytes(self.market.functions.datasetsHashOf(job_id).call()),
            "modelHash": keccak(b"model"),
            "resultHash": keccak(b"result"),
            "metricsHash": keccak(b"metrics"),
            "epsilonSpent": EPSILON // 2,
        }
        signed = Account.sign_typed_data(
            self.trainer.key, self._domain(self.market, "SterlingJobMarket"), RECEIPT_TYPES, receipt
        )
        fields = tuple(receipt[f["name"]] for f in RECEIPT_TYPES["Receipt"])
        return self.send(self.market.functions.submitResult(job_id, fields, bytes(signed.signature)), self.operator)

    def withdraw(self, who: str) -> int:
        return self.send(self.market.functions.withdraw(), who)

    def lifecycle(self, ids: list[int]) -> dict[str, int]:
        """One job over ``ids`` from creation to both withdrawals; gas per transaction."""
        job_id, create = self.create_job(ids)
        gas = {"createJob": create, "claimJob": self.claim(job_id), "submitResult": self.submit(job_id)}
        providers = {str(self.market.functions.dataset(i).call()[0]) for i in ids}
        gas["withdraw (provider)"] = sum(self.withdraw(p) for p in sorted(providers))
        gas["withdraw (worker)"] = self.withdraw(self.operator)
        gas["total"] = sum(gas.values())
        return gas


def _governance_and_registry(m: _Market, report: GasReport) -> None:
    r, gov = m.registry, m.governance
    report.add("deploy", "EnclaveRegistry", m.deploy_gas["EnclaveRegistry"])
    report.add("deploy", "JobMarket", m.deploy_gas["JobMarket"])
    report.add("approveMeasurement", "", m.send(r.functions.approveMeasurement(ROLE_TRAINER, MEASUREMENT), gov))
    verifier_role = r.functions.VERIFIER_ROLE().call()
    report.add("grantRole", "verifier", m.send(r.functions.grantRole(verifier_role, m.verifier.address), gov))
    report.add("register", "first", m.register_trainer())
    report.add("register", "renewal", m.register_trainer())


def _lease_functions(m: _Market, report: GasReport, ids: list[int]) -> None:
    """Leases (issue 13): renewal, a re-claim after a lapse, a release, the expiry of a lapsed claim."""
    f = m.market.functions
    job_id, _ = m.create_job(ids)
    m.claim(job_id)
    report.add("renewLease", "", m.send(f.renewLease(job_id), m.operator))
    m.travel(CLAIM_LEASE + 1)
    report.add("claimJob", "re-claim after lapse, 1 dataset (charge + slash)", m.claim(job_id))
    m.submit(job_id)
    m.register_key_manager()
    job_id, _ = m.create_job(ids)
    m.claim(job_id)
    report.add("releaseClaim", "", m.release(job_id))
    m.claim(job_id)
    m.submit(job_id)
    job_id, _ = m.create_job(ids)
    m.claim(job_id)
    m.travel(2 * CLAIM_LEASE + 1)
    report.add("expireJob", "lapsed claim, 1 dataset (slash)", m.send(f.expireJob(job_id), m.stranger))
    m.send(f.depositStake(3 * PRICE), m.operator, 3 * PRICE)  # top the slashes back up


def _stake_functions(m: _Market, report: GasReport) -> None:
    """An operator's stake from first deposit to withdrawal (the stranger's, so nothing else changes)."""
    f = m.market.functions
    report.add("depositStake", "first", m.stake_gas)
    report.add("depositStake", "top-up", m.send(f.depositStake(PRICE), m.operator, PRICE))
    report.add("requestUnstake", "", m.send(f.requestUnstake(), m.operator))
    m.travel(UNBONDING_PERIOD)
    report.add("withdrawStake", "", m.send(f.withdrawStake(), m.operator))


def _provider_functions(m: _Market, report: GasReport, dataset_id: int) -> None:
    f, p = m.market.functions, m.providers[0]
    terms = (PRICE, 2 * EPSILON, 1000 * EPSILON, DELTA, 0)
    report.add("updateTerms", "", m.send(f.updateTerms(dataset_id, terms), p))
    report.add("topUpBudget", "", m.send(f.topUpBudget(dataset_id, EPSILON), p))
    report.add("setDatasetPaused", "pause", m.send(f.setDatasetPaused(dataset_id, True), p))
    report.add("setDatasetPaused", "resume", m.send(f.setDatasetPaused(dataset_id, False), p))
    report.add("setAccessRestrictions", "", m.send(f.setAccessRestrictions(dataset_id, False, True), p))
    report.add("setModelsAllowed", "1 hash", m.send(f.setModelsAllowed(dataset_id, [keccak(b"model spec")], True), p))
    report.add("setConsumersAllowed", "1 account", m.send(f.setConsumersAllowed(dataset_id, [m.consumer], True), p))
    report.add("setAccessRestrictions", "", m.send(f.setAccessRestrictions(dataset_id, False, False), p))
    report.add("setDatasheet", "first", m.send(f.setDatasheet(dataset_id, keccak(b"datasheet")), p))
    report.add("setDatasheet", "replace", m.send(f.setDatasheet(dataset_id, keccak(b"datasheet v2")), p))


class _Competitions(_Market):
    """A :class:`_Market` plus a CompetitionMarket on the same registry, with an active key
    manager (run by governance) and an active evaluator (run by the operator). The organizer is
    the consumer; providers 0 and 1 take part."""

    def __init__(self, *, token: bool) -> None:
        super().__init__(token=token)
        self.evaluator = Account.from_key(keccak(b"gas report evaluator"))
        token_address = ZERO_ADDRESS if self.token is None else self.token.address
        self.competitions, gas = self._deploy("CompetitionMarket", self.registry.address, token_address, ADMIN_DELAY, self.governance)
        self.deploy_gas["CompetitionMarket"] = gas
        r = self.registry.functions
        self.send(r.grantRole(r.VERIFIER_ROLE().call(), self.verifier.address), self.governance)
        self.register_key_manager()
        self.send(r.approveMeasurement(ROLE_EVALUATOR, EVALUATOR_MEASUREMENT), self.governance)
        self._register(self.evaluator.address, ROLE_EVALUATOR, EVALUATOR_MEASUREMENT, self.operator)
        self.organizer, self.participants = self.consumer, (self.providers[0], self.providers[1])
        if self.token is not None:
            for who in (self.organizer, *self.participants):
                self.send(self.token.functions.mint(who, 10**30), who)
                self.send(self.token.functions.approve(self.competitions.address, 2**256 - 1), who)
        self._models = 0

    def _value(self, amount: int) -> Wei:
        return Wei(amount if self.token is None else 0)

    def _sign(self, statement: Admission | ScoreReceipt, key: Any) -> bytes:
        return sign(key, statement, chain_id=self.w3.eth.chain_id, competitions=bytes.fromhex(self.competitions.address[2:]))

    def enter(self, competition_id: int, participant: ChecksumAddress) -> int:
        self._models += 1
        content, weights = keccak(b"model %d" % self._models), keccak(b"weights")
        admission = self._sign(Admission(competition_id, bytes.fromhex(participant[2:]), content, weights), self.key_manager)
        return self.send(self.competitions.functions.submit(competition_id, content, weights, PRICE, admission), participant)

    def score(self, competition_id: int, index: int, split: Split, score: int) -> int:
        f = self.competitions.functions
        info = f.competitionOf(competition_id).call()
        content = f.submissionOf(competition_id, index).call()[1]
        previous = info[6] if split is Split.PUBLIC else 0  # the leaderboard's best
        receipt = ScoreReceipt(competition_id, index, content, info[2][0], info[2][4], split, score, previous)
        return self.send(f.postScore(receipt.as_tuple(), self._sign(receipt, self.evaluator)), self.operator)

    def round(self) -> dict[str, int]:
        """One competition from creation to the winner's withdrawal; gas per transaction.

        Participant 0 submits twice (its first and its second submission), participant 1 once;
        submission 1 (participant 0) wins; participant 1 buys submission 0.
        """
        f = self.competitions.functions
        now = self.now()
        terms = (keccak(b"test set"), keccak(b"schema"), keccak(b"rules"), PRICE, 1, 3000, 1000, now - 1, now + 3600, 1800, 3, 0, 7, 2)
        competition_id = int(f.createCompetition(terms).call({"from": self.organizer, "value": self._value(PRICE)}))
        gas = {"create": self.send(f.createCompetition(terms), self.organizer, self._value(PRICE))}
        a, b = self.participants
        gas["submit first"] = self.enter(competition_id, a)
        gas["submit"] = self.enter(competition_id, a)
        self.enter(competition_id, b)
        gas["public first"] = self.score(competition_id, 0, Split.PUBLIC, 900_000)
        gas["public"] = self.score(competition_id, 1, Split.PUBLIC, 950_000)
        self.score(competition_id, 2, Split.PUBLIC, 950_000)
        self.travel(3601)
        gas["private first"] = self.score(competition_id, 0, Split.PRIVATE, 900_000)
        gas["private"] = self.score(competition_id, 1, Split.PRIVATE, 950_000)  # takes the lead
        self.score(competition_id, 2, Split.PRIVATE, 800_000)
        gas["close"] = self.send(f.close(competition_id), self.organizer)
        gas["buy"] = self.send(f.buy(competition_id, 0, keccak(b"buyer key")), b, self._value(PRICE))
        gas["withdraw"] = self.send(f.withdraw(), a)
        return gas


def measure_competitions(report: GasReport) -> None:
    """Add the CompetitionMarket rows (native currency, then ERC-20) to ``report``.

    "first" rows: the participant's first submission to the competition, the competition's
    first public score (its leaderboard slot is written fresh), the first credit of a winner
    who was never paid. The others are steady state: a second round on the same accounts.
    """
    m = _Competitions(token=False)
    report.add("deploy", "CompetitionMarket", m.deploy_gas["CompetitionMarket"])
    first, steady = m.round(), m.round()
    report.add("createCompetition", "first", first["create"])
    report.add("createCompetition", "", steady["create"])
    report.add("submit", "first", steady["submit first"])
    report.add("submit", "", steady["submit"])
    report.add("postScore", "public, the competition's first", steady["public first"])
    report.add("postScore", "public", steady["public"])
    report.add("postScore", "private, the competition's first", steady["private first"])
    report.add("postScore", "private, takes the lead", steady["private"])
    report.add("close", "first credit of the winner", first["close"])
    report.add("close", "", steady["close"])
    report.add("buy", "", steady["buy"])
    report.add("withdraw", "competitions", steady["withdraw"])
    t = _Competitions(token=True)
    t.round()
    token = t.round()
    report.add("createCompetition", "ERC-20", token["create"])
    report.add("buy", "ERC-20", token["buy"])
    report.add("withdraw", "competitions, ERC-20", token["withdraw"])


def measure() -> GasReport:
    """Run every measurement (native-currency market, plus an ERC-20 market) and return them."""
    report = GasReport()
    m = _Market(token=False)
    _governance_and_registry(m, report)
    first, gas = m.list_dataset(m.providers[0], b"a")
    report.add("listDataset", "first", gas)
    ids = [first] + [m.list_dataset(m.providers[0], bytes([i]))[0] for i in (1, 2)]
    report.add("listDataset", "4 allowed consumers", m.list_dataset(m.providers[1], b"restricted", allowed=4)[1])
    job_id, gas = m.create_job(ids[:1])
    report.add("createJob", "1 dataset, first", gas)
    report.add("claimJob", "first", m.claim(job_id))
    report.add("submitResult", "1 dataset, first", m.submit(job_id))
    report.add("withdraw", "first", m.withdraw(m.providers[0]))
    m.withdraw(m.operator)
    m.lifecycle(ids)  # every account has now been paid and has withdrawn
    for count in (1, 3):
        report.lifecycle[count] = m.lifecycle(ids[:count])
        for name in ("createJob", "submitResult"):
            report.add(name, f"{count} dataset{'s' if count > 1 else ''}", report.lifecycle[count][name])
    report.add("claimJob", "", report.lifecycle[1]["claimJob"])
    report.add("withdraw", "", report.lifecycle[1]["withdraw (worker)"])
    ids16 = ids + [m.list_dataset(m.providers[2], bytes([100 + i]))[0] for i in range(13)]
    job16, gas = m.create_job(ids16)
    report.add("createJob", "16 datasets (the maximum)", gas)
    m.claim(job16)
    report.add("submitResult", "16 datasets", m.submit(job16))
    job_id, gas = m.create_job(ids[:1], change=1)
    report.add("createJob", "1 dataset, change credited", gas)
    report.add("cancelJob", "1 dataset", m.send(m.market.functions.cancelJob(job_id), m.consumer))
    job_id, _ = m.create_job(ids[:1])
    m.travel(3601)
    report.add("expireJob", "open, 1 dataset", m.send(m.market.functions.expireJob(job_id), m.stranger))
    job_id, _ = m.create_job(ids[:1])
    m.claim(job_id)
    m.travel(7201)
    report.add("expireJob", "claimed, past completion, 1 dataset (slash)", m.send(m.market.functions.expireJob(job_id), m.stranger))
    _lease_functions(m, report, ids[:1])
    _provider_functions(m, report, ids[0])
    report.add("pause", "", m.send(m.market.functions.pause(), m.governance))
    report.add("unpause", "", m.send(m.market.functions.unpause(), m.governance))
    report.add("delistDataset", "", m.send(m.market.functions.delistDataset(ids[2]), m.providers[0]))
    report.add("revokeMeasurement", "", m.send(m.registry.functions.revokeMeasurement(ROLE_TRAINER, MEASUREMENT), m.governance))
    report.add("revokeEnclave", "", m.send(m.registry.functions.revokeEnclave(m.trainer.address), m.governance))
    _stake_functions(m, report)

    t = _token_market()
    report.add("createJob", "ERC-20, 1 dataset", t["createJob"])
    report.add("withdraw", "ERC-20", t["withdraw (worker)"])
    report.add("lifecycle", "ERC-20, 1 dataset", t["total"])
    measure_competitions(report)
    return report


def _token_market() -> dict[str, int]:
    """The steady-state one-dataset lifecycle of a market paying in an ERC-20 token."""
    m = _Market(token=True)
    m.send(m.registry.functions.approveMeasurement(ROLE_TRAINER, MEASUREMENT), m.governance)
    m.send(m.registry.functions.grantRole(m.registry.functions.VERIFIER_ROLE().call(), m.verifier.address), m.governance)
    m.register_trainer()
    dataset_id, _ = m.list_dataset(m.providers[0], b"token")
    m.lifecycle([dataset_id])
    return m.lifecycle([dataset_id])


def render(report: GasReport, console: Console) -> None:
    """Print the table and the lifecycle lines."""
    table = Table(title="Gas per external function (embedded chain, Prague rules)")
    table.add_column("function")
    table.add_column("case")
    table.add_column("gas", justify="right")
    for function, case, gas in report.rows:
        table.add_row(function, case, f"{gas:,}")
    console.print(table)
    one, three = report.lifecycle[1], report.lifecycle[3]
    lifecycle = Table(title="Job lifecycle (steady state)")
    lifecycle.add_column("transaction")
    lifecycle.add_column("1 dataset", justify="right")
    lifecycle.add_column("3 datasets, one provider", justify="right")
    for name in one:
        lifecycle.add_row(name, f"{one[name]:,}", f"{three[name]:,}")
    console.print(lifecycle)
    console.print(
        f"a dataset of a new provider adds {report.per_extra_provider_dataset:,} "
        "(its provider's own withdraw included)",
        highlight=False,
    )


def markdown(report: GasReport) -> str:
    """The tables as Markdown (``--markdown``; what docs/gas.md shows)."""
    lines = ["| function | case | gas |", "|---|---|---:|"]
    lines += [f"| `{f}` | {c} | {g:,} |" for f, c, g in report.rows]
    one, three = report.lifecycle[1], report.lifecycle[3]
    lines += ["", "| lifecycle transaction | 1 dataset | 3 datasets, one provider |", "|---|---:|---:|"]
    lines += [f"| {name} | {one[name]:,} | {three[name]:,} |" for name in one]
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, out: Callable[[str], Any] | None = None) -> int:
    """Entry point of ``make gas`` (``python -m benchmarks.gas_report [--markdown]``)."""
    report = measure()
    if argv and "--markdown" in argv:
        print(markdown(report))
    else:
        render(report, Console(width=110))
    line = f"lifecycle gas: one dataset {report.lifecycle_one}, per extra dataset {report.per_extra_dataset}"
    (out or print)(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
