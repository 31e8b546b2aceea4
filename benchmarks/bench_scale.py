"""``make bench-scale``: Sterling's services as separate processes, on anvil and PostgreSQL (issue 17).

One run (``python -m benchmarks.bench_scale``):

1. starts a throw-away PostgreSQL cluster and an anvil node, deploys the contracts and does
   governance's part (:func:`sterling.compose.prepare_network`), then starts, each as a process of
   its own, ``sterling keymanager``, ``sterling indexer`` (into PostgreSQL), ``sterling gateway``
   (reading PostgreSQL) and two ``sterling worker`` processes of two operators;
2. lists real datasets through the SDK (ciphertext in the gateway's blob folder, keys deposited
   with the key-manager service) and synthetic history through the gateway's JSON-RPC relay:
   listings, and past jobs (each created and cancelled; their spec is in no blob store, so a worker
   that sees one Open refuses it before any claim);
3. **(a) pickup**: with ``--small-history`` (100) past jobs indexed, then with ``--history``
   (10,000) datasets and past jobs indexed, creates ``--pickups`` jobs one after another and times
   each from sending its ``createJob`` to the chain showing it claimed (polled every 20 ms), and
   lets it finish before the next (both workers idle at every creation);
4. **(c) throughput**: ``--batch-jobs`` short jobs on the 20,000-row hospital table created at once,
   timed until all are completed, with two worker processes and then with one (the other stopped):
   jobs per hour and the speed-up;
5. **(b) gateway under load**: a long DP job is created and trains on one worker while an open-loop
   load generator in its own process sends ``GET /api/datasets`` at ``--rate`` (200) requests/s
   for ``--load-seconds`` to the gateway over PostgreSQL with 10,000+ datasets;
6. **(d)** after everything is stopped, ``make bench-large``'s run (a 1 GiB dataset, one epoch
   chunked and in memory) in its own process, unless ``--skip-large``.

The last line reads
``bench-scale: pickup p50 X s at N jobs, gateway p99 Y ms (postgres), 2-worker speed-up Z, 1 GiB training peak RSS M MiB``
(``not measured`` where a part was skipped).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_typing import HexStr

from benchmarks.bench_dp import hospital_table, mlp_spec
from benchmarks.loadgen import LoadResult, open_loop_in_subprocess
from enclave_worker.remote import RemoteKeyManager
from enclave_worker.trusted import keywrap
from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.models import ModelSpec
from marketplace.blobstore import BlobStore
from marketplace.chain import Chain, Wei, anvil
from marketplace.consumer import Consumer
from marketplace.contracts import JobStatus, MarketClient, RegistryClient, Terms, delta_units, epsilon_units
from marketplace.provider import list_dataset
from sterling.compose import Composition, Service, prepare_network, wait_until
from sterling.up import TRAINER_NICENESS
from tests.conftest import toy_package, toy_spec
from tests.postgres import throwaway_cluster

EPSILON_PER_JOB = 1.0
ANVIL_STATES = 128
"""Recent states the node keeps (reads are at the head, or a few blocks back with confirmations)."""
PICKUP_POLL = 0.02
"""Seconds between looks at a new job's status while timing its pickup."""
BLOCK_SAMPLES = 5
"""Empty blocks mined to time anvil's block building at each history size (:func:`block_time`)."""


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


MINE_EVERY = 200
"""Transactions sent between two mined blocks while seeding."""


def send_in_order(chain: Chain, sender: str, transactions: list[dict[str, object]]) -> None:
    """``eth_sendTransaction`` from ``sender``, an unlocked development account, with consecutive
    nonces, one request after the other on one keep-alive connection, with automatic mining off and a
    block mined every :data:`MINE_EVERY` transactions (until the pool is empty). Mined one block per
    transaction, each costs anvil more than the last (900 transactions: 4 s, then 8, 12, 16 s), and a
    JSON-RPC batch is answered concurrently (nonces collide, or arrive out of order and stay queued)."""
    url = str(chain.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
    nonce = chain.w3.eth.get_transaction_count(chain.w3.to_checksum_address(sender), "pending")
    fees = {"maxFeePerGas": hex(10 * 10**9), "maxPriorityFeePerGas": hex(10**9)}  # far above anvil's falling base fee
    last = ""
    with httpx.Client(timeout=300) as client:

        def call(method: str, params: list[object]) -> object:
            body = client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()
            if "error" in body:
                raise RuntimeError(f"seeding: {method} refused: {body['error']}")
            return body["result"]

        def mine_all() -> None:
            while int(str(call("txpool_status", [])["pending"]), 16):  # type: ignore[index]
                call("evm_mine", [])

        call("evm_setAutomine", [False])
        try:
            for number, tx in enumerate(transactions):
                last = str(call("eth_sendTransaction", [{**tx, **fees, "from": sender, "nonce": hex(nonce + number)}]))
                if (number + 1) % MINE_EVERY == 0:
                    mine_all()
            mine_all()
        finally:
            call("evm_setAutomine", [True])
    if last:
        receipt = chain.w3.eth.wait_for_transaction_receipt(HexStr(last), timeout=300)
        if receipt["status"] != 1:
            raise RuntimeError(f"seeding: the last transaction {last} reverted")


def block_time(chain: Chain, *, samples: int = BLOCK_SAMPLES) -> float:
    """Median seconds anvil takes to mine an empty block (``evm_mine`` answers once it is mined).

    A pickup waits for two blocks, ``createJob``'s and ``claimJob``'s, and anvil's cost of building
    one grows with the chain's state, not with what the block holds (at 10,000 past jobs ~0.13 s,
    ~2 ms at 100; reads stay under a millisecond): that part of the pickup is the node's.
    """
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def seed_history(chain: Chain, market: MarketClient, *, count: int) -> None:
    """``count`` synthetic listings by one development account, then one past job on each by the
    other, created and cancelled at once. The jobs' spec hash names no document, so a worker that
    saw one Open would refuse it before any claim; cancelled, they are history."""
    provider, consumer = (str(a) for a in chain.w3.eth.accounts[:2])
    contract, address = market.contract, market.address
    first_dataset, first_job = market.dataset_count() + 1, market.job_count() + 1
    price = 10**15
    terms = Terms(
        price_per_job=Wei(price), max_epsilon_per_job=epsilon_units(2), total_epsilon_budget=epsilon_units(10), max_delta=delta_units(1e-4)
    )
    listings: list[dict[str, object]] = [
        {"to": address, "gas": hex(400_000),
         "data": contract.encode_abi("listDataset", args=[os.urandom(32), os.urandom(32), "sterling-blob:", terms.as_tuple(), [], []])}
        for _ in range(count)
    ]  # fmt: skip
    send_in_order(chain, provider, listings)
    now = chain.now()
    key = keywrap.public_key_bytes(X25519PrivateKey.generate())
    jobs: list[dict[str, object]] = []
    for i in range(count):
        request = (
            [first_dataset + i],
            os.urandom(32),
            epsilon_units(EPSILON_PER_JOB),
            delta_units(1e-5),
            key,
            0,
            price,
            now + 86_400,
            now + 2 * 86_400,
        )
        jobs.append(
            {
                "to": address,
                "gas": hex(600_000),
                "value": hex(price),
                "data": contract.encode_abi("createJob", args=[request]),
            }
        )
        jobs.append({"to": address, "gas": hex(200_000), "data": contract.encode_abi("cancelJob", args=[first_job + i])})
    send_in_order(chain, consumer, jobs)


@dataclass
class Stand:
    """The running services and the accounts the benchmark acts with."""

    chain: Chain
    market: MarketClient
    gateway: httpx.Client
    key_manager: Service
    workers: list[Service]
    consumer: Consumer
    toy_datasets: list[int]
    hospital: int

    def indexed(self) -> None:
        head = self.chain.w3.eth.block_number
        wait_until(
            lambda: self.gateway.get("/api/health").json().get("indexed_block", -1) >= head, what="the index catches up", timeout=900
        )

    def history(self, jobs: int) -> None:
        """Seed synthetic listings and past jobs until ``jobs`` jobs exist; wait until the index and
        both workers have followed them."""
        missing = jobs - self.market.job_count()
        if missing <= 0:
            return
        started = time.perf_counter()
        seed_history(self.chain, self.market, count=missing)
        say(f"seeded {missing} listings and {missing} past jobs ({3 * missing} transactions) in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        self.indexed()
        total = self.gateway.get("/api/datasets", params={"limit": 1}).json()["total"]
        say(f"indexed: {total} datasets, {self.market.job_count()} jobs, {time.perf_counter() - started:.1f} s after the last transaction")
        head = self.chain.w3.eth.block_number
        for worker in self.workers:
            if worker.alive():
                wait_until(_following(worker, head), what=f"{worker.name} reads the history's logs", timeout=900, service=worker)
        # The poll that read those logs then looks once at each new job (they are all cancelled, so
        # they leave its watch list): wait until a poll ended after that one began.
        read = time.time()
        for worker in self.workers:
            if worker.alive():
                wait_until(_polled_since(worker, read), what=f"{worker.name} looks at the new jobs", timeout=900, service=worker)
        say(f"both workers followed the history {time.perf_counter() - started:.1f} s after the last transaction")

    def create(self, dataset_id: int, spec: ModelSpec) -> int:
        return int(self.consumer.create_job([dataset_id], spec, epsilon=EPSILON_PER_JOB, delta=1e-5, worker_fee=Wei(0)).job_id)

    def status(self, job_id: int) -> JobStatus:
        return self.market.job(job_id).status

    def pickups(self, count: int) -> list[float]:
        """Seconds from sending each new job's createJob to the chain showing it claimed."""
        return [self.pickup(self.toy_datasets[k % len(self.toy_datasets)]) for k in range(count)]

    def pickup(self, dataset_id: int) -> float:
        """Create a short job on ``dataset_id``, time it until claimed, and let it complete."""
        created = time.perf_counter()  # before createJob is sent: the receipt may reach us after the claim
        job_id = self.create(dataset_id, toy_spec(epochs=2))
        wait_until(lambda: self.status(job_id) is not JobStatus.OPEN, what=f"job {job_id} is claimed", timeout=120, every=PICKUP_POLL)
        took = time.perf_counter() - created
        wait_until(lambda: self.status(job_id) is JobStatus.COMPLETED, what=f"job {job_id} completes", timeout=300)
        return took

    def batch(self, count: int, epochs: int) -> float:
        """Seconds until ``count`` jobs created at once on the hospital table are all completed."""
        spec = mlp_spec(256).model_copy(update={"epochs": epochs})
        started = time.perf_counter()
        jobs = [self.create(self.hospital, spec) for _ in range(count)]
        wait_until(lambda: all(self.status(j) is JobStatus.COMPLETED for j in jobs), what=f"{count} jobs complete", timeout=1800, every=0.2)
        return time.perf_counter() - started


def health(worker: Service) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{worker.url}/health", timeout=5).json()
    return answer


def _following(worker: Service, block: int) -> Callable[[], bool]:
    return lambda: int(health(worker)["followed_to_block"]) >= block


def _polled_since(worker: Service, moment: float) -> Callable[[], bool]:
    def check() -> bool:
        age = health(worker)["last_poll_age_s"]
        return age is not None and time.time() - float(age) > moment

    return check


def _serving(worker: Service) -> Callable[[], bool]:
    return lambda: bool(health(worker).get("running"))


def run_services(args: argparse.Namespace, folder: Path) -> dict[str, float | None]:
    figures: dict[str, float | None] = {}
    with throwaway_cluster() as cluster, anvil(keep_states=ANVIL_STATES) as chain:
        database = cluster.create_database()
        governance, verifier, km_operator, provider = (chain.new_account() for _ in range(4))
        network = prepare_network(chain, governance, verifier, folder)
        market = MarketClient(chain, network.deployment.market)
        registry = RegistryClient(chain, network.deployment.registry)
        blobs_dir = folder / "blobs"
        with Composition(network, folder) as services:
            started = time.perf_counter()
            km = services.keymanager(km_operator, verifier)
            services.indexer(database)
            gateway = services.gateway(database, blobs_dir, key_manager=km)
            workers = [
                services.worker(
                    chain.new_account(), km, str(blobs_dir), name=f"worker-{i}", interval=args.interval, niceness=TRAINER_NICENESS
                )
                for i in (1, 2)
            ]
            say(f"key manager, indexer, gateway and 2 workers up in {time.perf_counter() - started:.1f} s")
            blobs = BlobStore(blobs_dir)
            terms = Terms(
                price_per_job=Wei(10**15),
                max_epsilon_per_job=epsilon_units(2),
                total_epsilon_budget=epsilon_units(1_000),
                max_delta=delta_units(1e-4),
            )
            with RemoteKeyManager(str(km.url)) as key_manager:

                def listed(package: DatasetPackage) -> int:
                    item = list_dataset(
                        package, provider, terms=terms, market=market, registry=registry, key_manager=key_manager, blobs=blobs
                    )
                    return int(item.dataset_id)

                toy = [listed(toy_package(200, seed)) for seed in range(4)]
                hospital = listed(hospital_table())
            with httpx.Client(base_url=str(gateway.url), timeout=120) as client:
                stand = Stand(
                    chain, market, client, km, workers, Consumer(chain.new_account(), market=market, blobs=blobs),
                    toy, hospital,
                )  # fmt: skip

                # (a) pickup at small and at full history
                for jobs in (args.small_history, args.history):
                    stand.history(jobs)
                    mining = block_time(chain)
                    times = stand.pickups(args.pickups)
                    median = statistics.median(times)
                    figures[f"pickup_{jobs}"] = median
                    figures[f"pickup_{jobs}_sterling"] = max(0.0, median - 2 * mining)
                    say(
                        f"(a) {stand.market.job_count()} jobs on-chain: pickup p50 {median:.2f} s, max {max(times):.2f} s "
                        f"({', '.join(f'{t:.2f}' for t in times)}); anvil mines a block in {1000 * mining:.0f} ms "
                        f"(a pickup waits for two: createJob's and claimJob's), so Sterling's share is "
                        f"{figures[f'pickup_{jobs}_sterling']:.2f} s"
                    )

                # (c) jobs per hour with two workers, then one
                two = stand.batch(args.batch_jobs, args.batch_epochs)
                say(f"(c) 2 workers: {args.batch_jobs} jobs in {two:.1f} s, {3600 * args.batch_jobs / two:,.0f} jobs/hour")
                workers[1].stop()
                one = stand.batch(args.batch_jobs, args.batch_epochs)
                say(f"(c) 1 worker : {args.batch_jobs} jobs in {one:.1f} s, {3600 * args.batch_jobs / one:,.0f} jobs/hour")
                figures["speedup"] = one / two
                say(f"(c) speed-up with a second worker process: {one / two:.2f} (two cores)")

                # (b) the gateway over PostgreSQL while a job trains
                long_job = stand.create(stand.hospital, mlp_spec(256).model_copy(update={"epochs": args.long_epochs}))
                wait_until(_serving(workers[0]), what=f"job {long_job} trains", timeout=300, service=workers[0])
                load: LoadResult = open_loop_in_subprocess(f"{gateway.url}/api/datasets", rate=args.rate, duration=args.load_seconds)
                training = stand.status(long_job) is JobStatus.CLAIMED
                figures["gateway_p99"] = load.percentile(99)
                say(
                    f"(b) GET /api/datasets at {args.rate:g} req/s for {args.load_seconds:g} s over PostgreSQL "
                    f"({client.get('/api/datasets', params={'limit': 1}).json()['total']} datasets): p50 {load.percentile(50):.1f} ms, "
                    f"p99 {load.percentile(99):.1f} ms, errors {load.errors}, achieved {load.achieved_rps:.1f} req/s; "
                    f"job {long_job} {'still training' if training else 'no longer training'} at the end"
                )
    return figures


def run_large(args: argparse.Namespace) -> float | None:
    """``make bench-large``'s run in its own process; the trainer's peak RSS in MiB from its last line."""
    command = [sys.executable, "-m", "benchmarks.bench_large_dataset", *args.large_args]
    say(f"(d) {' '.join(command[1:])}")
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    lines = done.stdout.strip().splitlines()
    for line in lines[-6:]:
        say(f"(d) {line}")
    if done.returncode != 0:
        raise RuntimeError(f"bench-large failed ({done.returncode}):\n{done.stderr[-3000:]}")
    found = re.search(r"peak RSS ([\d,]+) MiB", lines[-1] if lines else "")
    return float(found.group(1).replace(",", "")) if found else None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=10_000, help="synthetic datasets and past jobs at the full size")
    parser.add_argument("--small-history", type=int, default=100, help="past jobs at the first pickup measurement")
    parser.add_argument("--pickups", type=int, default=8, help="new jobs timed at each history size")
    parser.add_argument("--batch-jobs", type=int, default=8, help="short jobs per throughput batch")
    parser.add_argument("--batch-epochs", type=int, default=10, help="epochs of each short job (20,000 rows, batch 256)")
    parser.add_argument("--long-epochs", type=int, default=1000, help="epochs of the job training during the load")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.5, help="the workers' poll interval (s)")
    parser.add_argument("--skip-large", action="store_true", help="leave out (d), the 1 GiB dataset")
    parser.add_argument("--large-args", nargs=argparse.REMAINDER, default=[], help="arguments for bench_large_dataset (last)")
    args = parser.parse_args(argv)
    if args.small_history > args.history:
        parser.error("--small-history must not exceed --history")
    signal.signal(signal.SIGTERM, _interrupt)  # stop the services and the cluster on the way out
    with tempfile.TemporaryDirectory(prefix="sterling-bench-scale-") as tmp:
        figures = run_services(args, Path(tmp))
    peak = None if args.skip_large else run_large(args)

    def shown(value: float | None, fmt: str) -> str:
        return "not measured" if value is None else format(value, fmt)

    print(
        f"bench-scale: pickup p50 {shown(figures.get(f'pickup_{args.history}'), '.2f')} s at {args.history} jobs "
        f"({shown(figures.get(f'pickup_{args.small_history}'), '.2f')} s at {args.small_history}), "
        f"gateway p99 {shown(figures.get('gateway_p99'), '.1f')} ms (postgres), 2-worker speed-up {shown(figures.get('speedup'), '.2f')}, "
        f"1 GiB training peak RSS {shown(peak, ',.0f')}{'' if peak is None else ' MiB'}",
        flush=True,
    )


if __name__ == "__main__":
    main()
