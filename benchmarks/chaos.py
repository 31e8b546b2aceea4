"""Chaos run: jobs keep their promises while components are killed with SIGKILL (issue 13).

``make chaos`` (``python -m benchmarks.chaos``) starts an anvil node and ``sterling up`` with two
trainer workers, lists three datasets and creates N jobs through the gateway, then kills
components at random moments from a seeded schedule (printed first, so a failure replays with
``--seed``) and restarts them:

| target | how it is killed | how it comes back |
|---|---|---|
| ``up`` | SIGKILL to ``sterling up`` (its children, the services, get SIGTERM from the kernel and stop) | respawned at once |
| ``trainer`` | SIGKILL to one trainer enclave process (a child of a ``sterling worker``) | its worker relaunches it |
| ``key-manager`` | SIGKILL to the key-manager enclave (under ``sterling keymanager``), then to ``sterling up`` | up respawned |
| ``anvil`` | mining stopped, state dumped, then SIGKILL (state kept, no block lost) | restarted from the dump |

After the schedule it waits (bounded, see ``docs/jobs.md``) until every job is Completed or
Expired, stops ``sterling up`` with Ctrl-C, and checks from the chain, the key manager's audit
log and the index:

* **no fork**: for each job and dataset, the key releases in the audit log are at most the
  ``BudgetDebited`` events of that job and dataset, not counting releases to a holder whose claim
  was given back on its ``RunAbandoned`` (its run produced nothing);
* **no stranded job**: every job reached Completed or Expired within the bound;
* **value conserved**: the market's balance equals Σ deposited − Σ withdrawn and equals
  Σ pending + locked escrow + total stake; each account's pending equals its credits less its
  withdrawals; every dataset's spent ε equals the sum of its debits and nothing stays reserved;
* the audit log is a valid hash chain, and the index equals a rebuild from the chain.

The last line reads ``chaos: jobs N, kills K, completed C, refunded R, forks 0, stranded 0,
value conserved yes``; the exit status is non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount
from sqlalchemy import MetaData, create_engine, select
from web3.logs import DISCARD

from enclave_worker.audit import CLAIM_RELEASE, AuditLog
from enclave_worker.trusted import keywrap
from enclave_worker.trusted.dataset import DatasetPackage, Schema
from enclave_worker.trusted.models import ModelSpec
from marketplace.chain import ANVIL_CHAIN_ID, Chain, Wei, anvil_binary, connect_rpc, free_port
from marketplace.competitions import CompetitionMarketClient
from marketplace.config import checkout_root, get_settings
from marketplace.contracts import EPSILON_SCALE, Deployment, JobStatus, MarketClient, RegistryClient, Terms, deploy
from marketplace.gateway_client import indexed_id, list_dataset_over_http
from oracle.index_db import BOOKKEEPING_TABLES, IndexDatabase
from oracle.indexer import Indexer
from sterling.up import LocalAccounts, ensure_funded

TARGETS = ("up", "trainer", "key-manager", "anvil")
PRICE = 10**17
WORKERS = 2
PROVIDERS = 3


@dataclass(frozen=True)
class Kill:
    at: float  # seconds after the first job was created
    target: str

    def __str__(self) -> str:
        return f"{self.at:6.1f}s {self.target}"


def schedule(seed: int, kills: int, span: float) -> list[Kill]:
    """``kills`` kills at seeded random moments in ``[2, span]`` seconds on seeded random targets.

    Every kind of target is hit once (in a random order) before any is hit twice.
    """
    rng = random.Random(seed)
    moments = sorted(rng.uniform(2.0, span) for _ in range(kills))
    targets: list[str] = []
    while len(targets) < kills:
        targets += rng.sample(TARGETS, len(TARGETS))
    return [Kill(round(t, 1), target) for t, target in zip(moments, targets, strict=False)]


# --- processes --------------------------------------------------------------------------------


class AnvilNode:
    """An anvil node the driver owns, so it can kill and restart it with its state."""

    def __init__(self, state_path: Path, log: Path) -> None:
        self.state_path = state_path
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Chain:
        args = [
            str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port), "--chain-id", str(ANVIL_CHAIN_ID),
            "--accounts", "2", "--balance", "1000000", "--hardfork", "prague", "--silent",
        ]  # fmt: skip
        if self.state_path.exists():
            args += ["--load-state", str(self.state_path)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return connect_rpc(self.url, kind="anvil", timeout=30)

    def kill_keeping_state(self) -> None:
        """Stop mining, dump the state, SIGKILL: a crash that loses no block (a lost block is a reorg)."""
        assert self.process is not None
        with httpx.Client(timeout=30) as client:
            _rpc(client, self.url, "evm_setAutomine", [False])
            dumped = _rpc(client, self.url, "anvil_dumpState", [])
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        raw = bytes.fromhex(dumped[2:])
        self.state_path.write_bytes(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _rpc(client: httpx.Client, url: str, method: str, params: list[Any]) -> Any:
    reply = client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


class UpProcess:
    """``sterling up`` against the driver's anvil, as a child the driver can SIGKILL."""

    def __init__(self, state_dir: Path, rpc_url: str, log: Path, *, env: dict[str, str]) -> None:
        self.state_dir, self.rpc_url, self.log, self.env = state_dir, rpc_url, log, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 240.0) -> None:
        args = [
            sys.executable, "-m", "sterling.cli", "up", "--rpc-url", self.rpc_url, "--state-dir", str(self.state_dir),
            "--port", str(self.port),
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(args, cwd=checkout_root(), stdout=out, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"sterling up exited with {self.process.returncode}; see {self.log}")
                try:
                    if client.get("/api/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        raise RuntimeError(f"sterling up not healthy within {timeout} s; see {self.log}")

    def enclave_pids(self, role: str) -> list[int]:
        """Pids of ``sterling up``'s enclave processes of ``role`` (``trainer`` or ``key_manager``)."""
        assert self.process is not None
        found = []
        for pid in _descendants(self.process.pid):  # the enclaves are children of the worker and key-manager processes
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"enclave_worker.trusted.main" in cmdline and role.encode() in cmdline:
                found.append(pid)
        return found

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            children = _children(self.process.pid)
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            # The enclaves die with their host (their pipes close); make sure no orphan lingers.
            deadline = time.monotonic() + 10
            for pid in children:
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)

    def stop(self, *, timeout: float = 90.0) -> int:
        """Ctrl-C, as a user would; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)


def _busiest(pids: list[int]) -> int:
    """The process that used the most CPU over the next 0.3 s: a trainer enclave that is training."""

    def cpu(pid: int) -> int:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])  # utime + stime

    before = {pid: cpu(pid) for pid in pids}
    time.sleep(0.3)
    return max(pids, key=lambda pid: cpu(pid) - before[pid])


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _descendants(pid: int) -> list[int]:
    """``pid``'s children, their children, and so on."""
    found, frontier = [], [pid]
    while frontier:
        children = [child for parent in frontier for child in _children(parent)]
        found += children
        frontier = children
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    jobs: int
    kills: list[Kill]
    completed: int = 0
    refunded: int = 0
    forks: int = 0
    stranded: int = 0
    value_conserved: bool = False
    given_back: int = 0  # ClaimReleased: claims returned with no ε charged
    abandoned: int = 0  # of those, on the holder's RunAbandoned after a failed run with the keys
    charged: int = 0  # ClaimCharged: lapsed claims re-claimed with an ε charge
    slashed: int = 0  # StakeSlashed
    releases: int = 0  # key releases in the audit log
    wall_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.forks == 0 and self.stranded == 0 and self.value_conserved

    def details(self) -> str:
        return (
            f"chaos: {self.releases} key releases, {self.given_back} claims given back with no ε charged "
            f"({self.abandoned} on the holder's RunAbandoned), "
            f"{self.charged} lapsed claims re-claimed with an ε charge, {self.slashed} stakes slashed, {self.wall_seconds:.0f} s"
        )

    def line(self) -> str:
        return (
            f"chaos: jobs {self.jobs}, kills {len(self.kills)}, completed {self.completed}, refunded {self.refunded}, "
            f"forks {self.forks}, stranded {self.stranded}, value conserved {'yes' if self.value_conserved else 'no'}"
        )


SCHEMA = Schema(task="classification", feature_names=("x0", "x1", "x2", "x3"), feature_shape=(4,), class_names=("neg", "pos"))


def _package(rows: int, seed: int) -> DatasetPackage:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 4)).astype(np.float32)
    labels = (features @ np.array([1.5, -1.0, 0.5, 0.0], dtype=np.float32) > 0).astype(np.int64)
    return DatasetPackage(features=features, labels=labels, schema=SCHEMA)


ROWS = 3000
SPEC = ModelSpec.model_validate(
    {"architecture": "mlp", "hidden_sizes": [128], "epochs": 60, "batch_size": 32, "learning_rate": 0.05, "max_grad_norm": 1.0, "seed": 0}
)
"""A job trains a few seconds, so kills land while jobs hold keys, run and settle."""


def run(*, jobs: int, kills: int, seed: int, lease: int, span: float, work_dir: Path, say: Any = print) -> Outcome:
    began = time.monotonic()
    plan = schedule(seed, kills, span)
    say(f"chaos: seed {seed}, {jobs} jobs, {WORKERS} workers, claim lease {lease} s; schedule (replay with --seed {seed}):")
    for kill in plan:
        say(f"  {kill}")
    outcome = Outcome(jobs=jobs, kills=plan)
    state_dir = work_dir / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    node = AnvilNode(work_dir / "anvil-state.json", work_dir / "anvil.log")
    chain = node.start()
    env = {
        **os.environ,
        "COLUMNS": "200",
        "STERLING_UP_TRAINERS": str(WORKERS),
        "STERLING_UP_DEV_ACCOUNTS": str(PROVIDERS + 1),
        "STERLING_UP_TRAINER_THREADS": "1",
    }
    up = UpProcess(state_dir, node.url, work_dir / "up.log", env=env)
    try:
        accounts = LocalAccounts.load_or_create(state_dir / "accounts.json", dev_count=PROVIDERS + 1)
        ensure_funded(chain, accounts.all())
        deployment = deploy(chain, accounts.governance, claim_lease=lease)
        deployment.save(state_dir / "deployment.json")
        up.start()
        dataset_ids, spec_hash = _populate(up.url, accounts, jobs)
        market = MarketClient(connect_rpc(node.url, kind="anvil", timeout=30), deployment.market)
        consumer = Submitter(
            MarketClient(connect_rpc(node.url, kind="anvil", timeout=30), deployment.market), accounts.dev[PROVIDERS],
            dataset_ids, spec_hash, jobs=jobs, interval=0.5 * span / jobs,
        )  # fmt: skip
        start = time.monotonic()
        consumer.start()
        _play(plan, start, up, node)
        consumer.join()
        if consumer.error is not None:
            outcome.problems.append(f"the consumer failed: {consumer.error}")
        created = market.job_count()
        if created != jobs:
            outcome.problems.append(f"{created} jobs exist on the chain, {jobs} were to be created")
        outcome.jobs = created
        bound = 4 * lease + 120.0
        say(f"chaos: schedule done; waiting at most {bound:.0f} s for every job to finish")
        _wait_terminal(market, outcome.jobs, bound=bound)
        status = up.stop()
        if status != 0:
            outcome.problems.append(f"sterling up exited with {status} after Ctrl-C")
        _check(outcome, market, state_dir, deployment, dataset_ids)
        outcome.wall_seconds = time.monotonic() - began
    finally:
        up.kill()
        node.stop()
    return outcome


def _populate(url: str, accounts: LocalAccounts, jobs: int) -> tuple[list[int], bytes]:
    """List one dataset per provider and publish the jobs' model spec, through the gateway."""
    terms = Terms(
        price_per_job=PRICE,  # type: ignore[arg-type]
        max_epsilon_per_job=EPSILON_SCALE,
        total_epsilon_budget=(3 * jobs + 10) * EPSILON_SCALE,
        max_delta=10**14,
    )
    ids: list[int] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for i, provider in enumerate(accounts.dev[:PROVIDERS]):
            listing = list_dataset_over_http(client, provider, _package(ROWS, seed=i), terms)
            ids.append(indexed_id(listing.receipt, "DatasetListed"))
        published = client.post("/api/specs", content=SPEC.to_bytes(), headers={"content-type": "application/json"})
        published.raise_for_status()
    return ids, bytes.fromhex(published.json()["sha256"])


class Submitter(threading.Thread):
    """The consumer: creates ``jobs`` jobs, one every ``interval`` seconds, straight on the chain
    (so a job arrives whatever is down), retrying through node restarts without creating one twice."""

    def __init__(self, market: MarketClient, consumer: LocalAccount, dataset_ids: list[int], spec_hash: bytes,
                 *, jobs: int, interval: float) -> None:  # fmt: skip
        super().__init__(name="chaos-consumer", daemon=True)
        self.market, self.consumer, self.dataset_ids, self.spec_hash = market, consumer, dataset_ids, spec_hash
        self.jobs, self.interval = jobs, interval
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for n in range(self.jobs):
                delay = start + n * self.interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._create(n)
        except BaseException as e:  # reported by the driver
            self.error = e

    def _create(self, n: int) -> None:
        chosen = self.dataset_ids if n % 3 == 0 else [self.dataset_ids[n % PROVIDERS]]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.market.job_count() > n:  # the previous attempt landed after all
                    return
                now = self.market.chain.now()
                self.market.create_job(
                    self.consumer, dataset_ids=chosen, model_spec_hash=self.spec_hash, epsilon=EPSILON_SCALE // 2,
                    delta=10**13, consumer_key=keywrap.public_key_bytes(X25519PrivateKey.generate()), worker_fee=Wei(0),
                    claim_deadline=now + 3600, completion_deadline=now + 7200,
                )  # fmt: skip
                return
            except Exception:  # the node is down or lost the transaction: look again
                time.sleep(1.0)
        raise RuntimeError(f"job {n + 1} could not be created within 120 s")


def _play(plan: list[Kill], start: float, up: UpProcess, node: AnvilNode) -> None:
    for kill in plan:
        delay = start + kill.at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if kill.target == "up":
            up.kill()
            up.start()
        elif kill.target == "trainer":
            pids = up.enclave_pids("trainer")
            if pids:
                os.kill(_busiest(pids), signal.SIGKILL)
        elif kill.target == "key-manager":
            for pid in up.enclave_pids("key_manager"):
                os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
            up.kill()
            up.start()
        else:
            node.kill_keeping_state()
            time.sleep(1.0)
            node.start()


def _wait_terminal(market: MarketClient, jobs: int, *, bound: float) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if all(market.job(i).status not in (JobStatus.OPEN, JobStatus.CLAIMED) for i in range(1, jobs + 1)):
            return
        time.sleep(1.0)


def _check(outcome: Outcome, market: MarketClient, state_dir: Path, deployment: Deployment, dataset_ids: list[int]) -> None:
    from_block = deployment.block
    statuses = Counter(market.job(i).status for i in range(1, outcome.jobs + 1))
    outcome.completed = statuses[JobStatus.COMPLETED]
    outcome.refunded = statuses[JobStatus.EXPIRED] + statuses[JobStatus.CANCELLED]
    outcome.stranded = outcome.jobs - outcome.completed - outcome.refunded

    events = market.contract.events
    debits = Counter(
        (int(e["args"]["jobId"]), int(e["args"]["datasetId"])) for e in events.BudgetDebited().get_logs(from_block=from_block)
    )
    debited: Counter[int] = Counter()
    for e in events.BudgetDebited().get_logs(from_block=from_block):
        debited[int(e["args"]["datasetId"])] += int(e["args"]["epsilonSpent"])

    audit = AuditLog(state_dir / "key-manager" / "audit.jsonl")
    try:
        entries = audit.entries()
    except Exception as e:  # a broken chain is a failed check, reported with the rest
        outcome.problems.append(f"audit log: {e}")
        entries = []
    # A release under a claim given back on its holder's RunAbandoned produced nothing: not a run.
    abandoned = {(e.job_id, e.dataset_id, e.trainer.lower()) for e in entries if e.kind == CLAIM_RELEASE and e.retired and e.abandoned}
    outcome.abandoned = len({(job, trainer) for job, _, trainer in abandoned})
    outcome.releases = sum(1 for e in entries if e.released)
    releases = Counter(
        (e.job_id, e.dataset_id) for e in entries if e.released and (e.job_id, e.dataset_id, e.trainer.lower()) not in abandoned
    )
    outcome.given_back = len(events.ClaimReleased().get_logs(from_block=from_block))
    outcome.charged = len(events.ClaimCharged().get_logs(from_block=from_block))
    outcome.slashed = len(events.StakeSlashed().get_logs(from_block=from_block))
    outcome.forks = sum(1 for key, n in releases.items() if n > debits[key])

    for dataset_id in dataset_ids:
        record = market.dataset(dataset_id)
        if record.epsilon_spent != debited[dataset_id]:
            outcome.problems.append(f"dataset {dataset_id}: spent {record.epsilon_spent} != Σ debits {debited[dataset_id]}")
        if record.epsilon_reserved != 0:
            outcome.problems.append(f"dataset {dataset_id}: {record.epsilon_reserved} ε still reserved")

    outcome.value_conserved = _value_conserved(outcome, market, from_block)
    _compare_index(outcome, market, state_dir, deployment)


def _value_conserved(outcome: Outcome, market: MarketClient, from_block: int) -> bool:
    chain = market.chain
    events = market.contract.events
    balance = chain.balance(market.address)
    credited: Counter[str] = Counter()
    for e in events.PaymentCredited().get_logs(from_block=from_block):
        credited[str(e["args"]["account"])] += int(e["args"]["amount"])
    withdrawn: Counter[str] = Counter()
    for e in events.Withdrawn().get_logs(from_block=from_block):
        withdrawn[str(e["args"]["account"])] += int(e["args"]["amount"])
    deposited = sum(int(e["args"]["escrow"]) for e in events.JobCreated().get_logs(from_block=from_block))
    deposited += sum(int(e["args"]["amount"]) for e in events.StakeDeposited().get_logs(from_block=from_block))
    # createJob sends maxTotalPrice and credits the change: count what was sent, i.e. escrow + change.
    change = sum(
        int(e["args"]["amount"])
        for e in events.PaymentCredited().get_logs(from_block=from_block)
        if _is_change(market, e)
    )
    deposited += change
    pending_total = 0
    ok = True
    for account in set(credited) | set(withdrawn):
        pending = market.pending_withdrawal(account)
        pending_total += pending
        if pending != credited[account] - withdrawn[account]:
            outcome.problems.append(f"{account}: pending {pending} != credited {credited[account]} - withdrawn {withdrawn[account]}")
            ok = False
    locked, stake = market.locked_escrow(), market.total_stake()
    if balance != pending_total + locked + stake:
        outcome.problems.append(f"balance {balance} != pending {pending_total} + locked {locked} + stake {stake}")
        ok = False
    if balance != deposited - sum(withdrawn.values()):
        outcome.problems.append(f"balance {balance} != deposited {deposited} - withdrawn {sum(withdrawn.values())}")
        ok = False
    return ok


def _is_change(market: MarketClient, log: Any) -> bool:
    """Whether a PaymentCredited is createJob's change (credited in the job-creating transaction)."""
    receipt = market.chain.w3.eth.get_transaction_receipt(log["transactionHash"])
    return bool(market.contract.events.JobCreated().process_receipt(receipt, errors=DISCARD))


def _compare_index(outcome: Outcome, market: MarketClient, state_dir: Path, deployment: Deployment) -> None:
    """The live index (kept through every kill) must equal one rebuilt from the chain."""
    settings = get_settings(state_dir=state_dir)
    live_url = settings.database_url or f"sqlite:///{state_dir / 'index.db'}"
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt_url = f"sqlite:///{Path(tmp) / 'rebuilt.db'}"
        rebuilt = IndexDatabase(rebuilt_url)
        rebuilt.create_schema()
        registry = RegistryClient(market.chain, deployment.registry)
        competitions = CompetitionMarketClient(market.chain, deployment.competitions) if deployment.competitions else None
        indexer = Indexer(rebuilt, market=market, registry=registry, start_block=deployment.block, competitions=competitions)
        while indexer.poll_once():
            pass
        live_tables = _dump(live_url)
        rebuilt_tables = _dump(rebuilt_url)
        rebuilt.close()
    for name, rows in rebuilt_tables.items():
        if live_tables.get(name) != rows:
            outcome.problems.append(f"index table {name} differs from a rebuild from the chain")


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name, table in meta.tables.items():
            if name in BOOKKEEPING_TABLES:
                continue
            rows = [tuple(r) for r in conn.execute(select(table)).all()]
            tables[name] = sorted(rows, key=repr)
    engine.dispose()
    return tables


@contextmanager
def _work_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="sterling-chaos-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(2), "big"))
    parser.add_argument("--lease", type=int, default=10, help="the market's claim lease, seconds")
    parser.add_argument("--span", type=float, default=90.0, help="kills happen in this many seconds after the jobs exist")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep logs and state here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with _work_dir(args.work_dir) as work_dir:
        outcome = run(jobs=args.jobs, kills=args.kills, seed=args.seed, lease=args.lease, span=args.span, work_dir=work_dir)
        for problem in outcome.problems:
            print(f"chaos: FAILED: {problem}")
        if not outcome.ok:
            print(f"chaos: logs in {work_dir} (replay with --seed {args.seed})")
        print(outcome.details())
        print(outcome.line())
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
