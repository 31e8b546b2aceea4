"""Gateway latency under load: ``GET /api/datasets`` at a fixed rate while a job trains.

``make bench-api`` (``python -m benchmarks.bench_api``):

1. starts ``sterling up --chain anvil`` in a child process (the gateway, indexer, key manager,
   trainer and dispatcher together, as a user runs them) on a fresh state directory;
2. lists 1,000 datasets on-chain through the gateway's JSON-RPC relay (signed locally, relayed
   with ``eth_sendRawTransaction``; synthetic content hashes, real listings, all indexed);
3. lists one real dataset the browser's way (ciphertext upload, wrapped key deposit) and creates a
   long DP training job on it, and waits until the worker is training it;
4. runs an open-loop load generator on the loopback interface (:mod:`benchmarks.loadgen`) at
   ``--rate`` requests per second for ``--duration`` seconds against ``GET /api/datasets``;
5. prints the latency percentiles, errors and achieved rate, and whether the job was training
   throughout. The last line reads ``bench-api: p50 X ms, p99 Y ms, errors N, rps R``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from benchmarks.loadgen import open_loop_in_subprocess
from enclave_worker.trusted import keywrap
from marketplace.abi import load_artifact
from marketplace.chain import Wei
from marketplace.contracts import Terms, delta_units, epsilon_units
from marketplace.gateway_client import (
    chain_fees,
    create_job_over_http,
    indexed_id,
    list_dataset_over_http,
    relay_signed,
    rpc,
    wait_for_receipt,
)
from sterling.up import spawned

DATASETS = 1000
TRAINING_EPOCHS = 400


def _seed_listings(client: httpx.Client, provider: LocalAccount, *, count: int, market: str) -> None:
    """``count`` listDataset transactions, signed locally with consecutive nonces and relayed."""
    contract = Web3().eth.contract(abi=load_artifact("JobMarket")["abi"])
    chain_id, base_fee = chain_fees(client)
    nonce = int(rpc(client, "eth_getTransactionCount", [provider.address, "pending"]), 16)
    last = ""
    for i in range(count):
        terms = Terms(
            price_per_job=Wei(10**15 * (1 + i % 97)),
            max_epsilon_per_job=epsilon_units(1 + i % 3),
            total_epsilon_budget=epsilon_units(10 + i % 17),
            max_delta=delta_units(1e-4),
        )
        data = contract.encode_abi("listDataset", args=[os.urandom(32), os.urandom(32), "sterling-blob:", terms.as_tuple(), [], []])
        last = relay_signed(client, provider, to=market, data=data, nonce=nonce + i, gas=400_000, chain_id=chain_id, base_fee=base_fee)
    wait_for_receipt(client, last, timeout=300)


STILL_WAITING_SECONDS = 30.0
"""How often a wait says it is still waiting, and for what."""


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _wait(predicate: Callable[[], bool], *, timeout: float, what: str, state: Callable[[], str] | None = None) -> None:
    """Wait until ``predicate()`` holds, saying every :data:`STILL_WAITING_SECONDS` that it still waits
    for ``what`` (and ``state()``, where things stand).

    Raises:
        TimeoutError: not within ``timeout`` seconds; the message says for what, and where things stood.
    """
    started = time.monotonic()
    said = started
    while not predicate():
        now = time.monotonic()
        where = f" ({state()})" if state is not None else ""
        if now - started > timeout:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}{where}")
        if now - said >= STILL_WAITING_SECONDS:
            _say(f"still waiting for {what}{where}, {now - started:.0f} s so far")
            said = now
        time.sleep(0.5)


def _start_training_job(client: httpx.Client, provider: LocalAccount, consumer: LocalAccount) -> int:
    """List the 20,000-row hospital table the browser's way and create a long DP job on it."""
    from benchmarks.bench_dp import hospital_table, mlp_spec

    terms = Terms(
        price_per_job=Wei(10**16), max_epsilon_per_job=epsilon_units(5), total_epsilon_budget=epsilon_units(50), max_delta=delta_units(1e-4)
    )
    listing = list_dataset_over_http(client, provider, hospital_table(), terms)
    dataset_id = indexed_id(listing.receipt, "DatasetListed")
    spec = mlp_spec(64).model_copy(update={"epochs": TRAINING_EPOCHS})
    consumer_key = keywrap.public_key_bytes(X25519PrivateKey.generate())
    receipt = create_job_over_http(
        client,
        consumer,
        dataset_ids=[dataset_id],
        spec=spec,
        consumer_key=consumer_key,
        max_total_price=10**16,
        epsilon_units=epsilon_units(2),
    )
    return indexed_id(receipt, "JobCreated")


def _training(client: httpx.Client, job_id: int) -> bool:
    job = client.get(f"/api/jobs/{job_id}").json()
    progress = job.get("progress") or {}
    return bool(job["status"] == "claimed" and progress.get("stage") == "training")


def _job_state(client: httpx.Client, job_id: int) -> str:
    job = client.get(f"/api/jobs/{job_id}").json()
    return f"job status {job.get('status')}, progress {job.get('progress')}"


def run(*, rate: float, duration: float, datasets: int, state_dir: Path, train: bool = True) -> None:
    log = state_dir / "up.log"
    _say("starting sterling up --chain anvil (a child process) on a fresh state directory")
    try:
        _run(rate=rate, duration=duration, datasets=datasets, state_dir=state_dir, log=log, train=train)
    except BaseException:
        if log.exists():  # the temporary state directory goes with this process: show what sterling up said
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print("sterling up's log, last lines:", *tail, sep="\n", file=sys.stderr)
        raise


def _run(*, rate: float, duration: float, datasets: int, state_dir: Path, log: Path, train: bool) -> None:
    with spawned(state_dir / "state", log=log, chain="anvil") as (url, _), httpx.Client(base_url=url, timeout=120) as client:
        config = client.get("/api/config").json()
        provider = Account.from_key(config["dev_accounts"][0]["private_key"])
        consumer = Account.from_key(config["dev_accounts"][1]["private_key"])
        _say(f"sterling up is serving {url}; listing {datasets} datasets through its JSON-RPC relay")
        started = time.perf_counter()
        _seed_listings(client, provider, count=datasets, market=config["contracts"]["job_market"])
        if train:
            _say("listing the hospital table and creating a training job")
        job_id = _start_training_job(client, provider, consumer) if train else None
        head = int(rpc(client, "eth_blockNumber"), 16)

        def indexed() -> int:
            return int(client.get("/api/health").json()["indexed_block"])

        _wait(lambda: indexed() >= head, timeout=300, what=f"the index to reach block {head}", state=lambda: f"indexed block {indexed()}")
        total = client.get("/api/datasets", params={"limit": 1}).json()["total"]
        print(f"seeded {total} indexed datasets in {time.perf_counter() - started:.1f} s; job {job_id} created")
        if job_id is not None:
            _wait(
                lambda: _training(client, job_id), timeout=300, what=f"job {job_id} to start training",
                state=lambda: _job_state(client, job_id),
            )  # fmt: skip
            print(f"job {job_id} is training; loading GET /api/datasets at {rate:g} req/s for {duration:g} s (open loop)", flush=True)
        result = open_loop_in_subprocess(f"{url}/api/datasets", rate=rate, duration=duration)
        still = job_id is not None and _training(client, job_id)
        progress = client.get(f"/api/jobs/{job_id}").json().get("progress") or {} if job_id is not None else {}
    print(f"requests {result.requests}, errors {result.errors}, achieved {result.achieved_rps:.1f} req/s")
    slowest = max(result.latencies_ms, default=float("nan"))
    print(
        f"latency ms: p50 {result.percentile(50):.1f}, p90 {result.percentile(90):.1f}, p99 {result.percentile(99):.1f}, max {slowest:.1f}"
    )
    if job_id is not None:
        state = "still training" if still else "no longer training"
        print(f"job {job_id} {state} at the end (epoch {progress.get('epoch')} of {progress.get('epochs')})")
    print(
        f"bench-api: p50 {result.percentile(50):.1f} ms, p99 {result.percentile(99):.1f} ms, errors {result.errors}, "
        f"rps {result.achieved_rps:.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--datasets", type=int, default=DATASETS, help="datasets to list before the load")
    parser.add_argument("--no-job", action="store_true", help="measure without a job training (a baseline)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sterling-bench-api-") as tmp:
        run(rate=args.rate, duration=args.duration, datasets=args.datasets, state_dir=Path(tmp), train=not args.no_job)


if __name__ == "__main__":
    main()
