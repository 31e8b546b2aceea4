"""``sterling up``: a whole local Sterling behind one URL.

Starts (or connects to) the chain, deploys the contracts unless the state directory records a
deployment that is still there, starts the attestation verifier with a key-manager and a
trainer enclave (registering their fresh keys), the job dispatcher, the chain indexer, and the
gateway (API, static UI, JSON-RPC relay, live events) under uvicorn. Everything it needs to
come back after a restart lives in the state directory:

| file | what |
|---|---|
| ``anvil-state.json`` | the anvil chain (blocks, state), dumped on exit and every few seconds |
| ``accounts.json`` | governance, verifier, operator and development keys (mode 0600; local use only) |
| ``deployment.json`` | contract addresses and deployment block |
| ``index.db`` | the chain index (SQLite; ``--database-url`` for another database) |
| ``blobs/``, ``key-manager/``, ``status/``, ``sim-platform.pem`` | ciphertext, sealed data keys, job progress, the simulated platform key |
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import httpx
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount

from oracle.dispatcher import Dispatcher
from oracle.index_db import IndexDatabase
from oracle.indexer import Indexer, IndexerChainMismatch

from . import chain as chain_mod
from ._files import write_atomic
from .chain import Chain, Wei
from .config import REPO_ROOT, network
from .contracts import Deployment, code_version, deploy
from .errors import ConfigError, SterlingError
from .gateway import GatewayServices, create_app, get_settings
from .localnet import LocalNet, start_enclaves

logger = logging.getLogger(__name__)

ChainChoice = Literal["anvil", "embedded"]
StageFn = Callable[[str, str], None]
MIN_BALANCE = Wei(10**18)
FUNDING = Wei(10**21)
ANVIL_STATE_INTERVAL_SECONDS = 5
TRAINER_NICENESS = 10
"""The trainer enclave runs at a lower priority than the gateway it shares the machine with."""
THREAD_JOIN_SECONDS = 10.0
GRACEFUL_SHUTDOWN_SECONDS = 3


@dataclass(frozen=True)
class UpConfig:
    """What ``sterling up`` runs; the CLI options map one to one."""

    chain: ChainChoice = "anvil"
    rpc_url: str | None = None
    state_dir: Path = Path(".sterling")
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    dev_accounts: int = 3
    indexer_interval: float = 0.5
    dispatcher_interval: float = 1.0
    trainer_threads: int = max(1, (os.cpu_count() or 2) - 1)
    """Training leaves one core to the gateway, indexer and chain that share the machine."""


@dataclass(frozen=True)
class LocalAccounts:
    """The keys a local Sterling runs with, kept in ``accounts.json`` so roles survive restarts."""

    governance: LocalAccount
    verifier: LocalAccount
    operator: LocalAccount
    dev: tuple[LocalAccount, ...]

    @classmethod
    def load_or_create(cls, path: Path, *, dev_count: int) -> LocalAccounts:
        """Read the keys at ``path``, creating missing ones (the file is written with mode 0600)."""
        keys: dict[str, Any] = {}
        if path.exists():
            try:
                keys = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read {path}: {e}") from e
        changed = False
        for role in ("governance", "verifier", "operator"):
            if not isinstance(keys.get(role), str):
                keys[role] = "0x" + bytes(Account.create().key).hex()
                changed = True
        dev = [k for k in keys.get("dev", []) if isinstance(k, str)]
        while len(dev) < dev_count:
            dev.append("0x" + bytes(Account.create().key).hex())
            changed = True
        keys["dev"] = dev
        if changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, (json.dumps(keys, indent=2) + "\n").encode())
            os.chmod(path, 0o600)
        try:
            return cls(
                governance=Account.from_key(keys["governance"]),
                verifier=Account.from_key(keys["verifier"]),
                operator=Account.from_key(keys["operator"]),
                dev=tuple(Account.from_key(k) for k in dev[:dev_count]),
            )
        except ValueError as e:
            raise ConfigError(f"{path} holds an invalid key") from e

    def all(self) -> tuple[LocalAccount, ...]:
        return (self.governance, self.verifier, self.operator, *self.dev)


def ensure_funded(chain: Chain, accounts: tuple[LocalAccount, ...]) -> None:
    """Top up accounts below 1 ETH from the node's development account.

    Raises:
        ConfigError: on a network without an unlocked development account; the message lists
            the addresses to fund.
    """
    poor = [a.address for a in accounts if chain.balance(a.address) < MIN_BALANCE]
    if not poor:
        return
    if chain.kind in ("embedded", "anvil"):
        for address in poor:
            chain.fund(address, FUNDING)
        return
    try:
        source = chain.w3.eth.accounts[0] if chain.w3.eth.accounts else None
    except Exception:  # the node does not expose accounts (a real network)
        source = None
    if source is None:
        raise ConfigError(f"fund these accounts with at least 1 ETH each, then run `sterling up` again: {', '.join(poor)}")
    for address in poor:
        tx_hash = chain.w3.eth.send_transaction({"from": source, "to": address, "value": FUNDING})  # type: ignore[typeddict-item]
        chain.w3.eth.wait_for_transaction_receipt(tx_hash)


def ensure_deployment(chain: Chain, governance: LocalAccount, path: Path) -> tuple[Deployment, bool]:
    """The deployment recorded at ``path`` if its contracts are on this chain, else a new one.

    Returns:
        ``(deployment, fresh)``: ``fresh`` when the contracts were just deployed.
    """
    if path.exists():
        try:
            recorded = Deployment.load(path)
        except ConfigError:
            logger.warning("ignoring unreadable deployment record %s", path)
        else:
            if recorded.code_version != code_version():
                logger.warning("the recorded deployment runs other contract code (%s); deploying again", recorded.code_version or "older")
            elif recorded.chain_id == chain.chain_id and all(len(chain.w3.eth.get_code(a)) > 0 for a in (recorded.registry, recorded.market)):  # type: ignore[arg-type]
                logger.info("reusing deployment: registry %s, market %s", recorded.registry, recorded.market)
                return recorded, False
            else:
                logger.info("the recorded deployment is not on this chain; deploying again")
    deployment = deploy(chain, governance)
    deployment.save(path)
    return deployment, True


@contextmanager
def open_chain(config: UpConfig) -> Iterator[Chain]:
    """The chain of ``config``: an RPC URL, anvil with its state in the state directory, or embedded."""
    if config.rpc_url is not None:
        yield chain_mod.connect_rpc(config.rpc_url, kind="rpc")
    elif config.chain == "embedded":
        yield chain_mod.embedded()
    else:
        hardfork = network("anvil").hardfork or "prague"
        with chain_mod.anvil(
            state_path=config.state_dir / "anvil-state.json", hardfork=hardfork, state_interval=ANVIL_STATE_INTERVAL_SECONDS
        ) as chain:
            yield chain


class _Server(uvicorn.Server):
    """uvicorn's server, ending the gateway's event streams as soon as shutdown begins.

    Otherwise an open browser tab would hold the graceful shutdown until its timeout.
    """

    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _start_thread(stack: ExitStack, name: str, target: Callable[[threading.Event], None]) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(THREAD_JOIN_SECONDS)
        if thread.is_alive():
            logger.warning("%s did not stop within %.0f s", name, THREAD_JOIN_SECONDS)

    stack.callback(halt)


def _start_indexer(index: IndexDatabase, net: LocalNet, *, fresh: bool, interval: float, stack: ExitStack) -> Indexer:
    indexer = Indexer(index, market=net.market, registry=net.registry, start_block=net.deployment.block)
    if fresh:
        index.reset()
    try:
        indexer.cursor()
    except IndexerChainMismatch as e:
        logger.warning("%s", e)
        index.reset()
        indexer.cursor()
    _start_thread(stack, "sterling-indexer", lambda stop: indexer.run(stop, interval=interval))
    return indexer


def run_up(config: UpConfig, *, on_ready: Callable[[str], None], say: StageFn | None = None) -> None:
    """Run everything until SIGINT or SIGTERM, then stop it all (the chain last, so it dumps its state).

    Args:
        on_ready: called with the URL once the gateway accepts connections.
        say: progress notes ``(stage, detail)`` while starting.
    """
    note = say or (lambda stage, detail: None)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    state_dir = config.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        with ExitStack() as stack:
            chain = stack.enter_context(open_chain(config))
            note("chain", f"{chain.kind}, chain id {chain.chain_id}, block {chain.w3.eth.block_number}")
            accounts = LocalAccounts.load_or_create(state_dir / "accounts.json", dev_count=config.dev_accounts)
            ensure_funded(chain, accounts.all())
            deployment, fresh = ensure_deployment(chain, accounts.governance, state_dir / "deployment.json")
            note("contracts", f"{'deployed' if fresh else 'reused'}: market {deployment.market}, registry {deployment.registry}")
            net = start_enclaves(
                chain, deployment, state_dir,
                governance=accounts.governance, verifier_key=accounts.verifier, operator=accounts.operator, say=note,
                trainer_threads=config.trainer_threads, trainer_niceness=TRAINER_NICENESS,
            )  # fmt: skip
            stack.callback(net.close)
            settings = get_settings(host=config.host, port=config.port, state_dir=state_dir, database_url=config.database_url)
            index = IndexDatabase(settings.index_url)
            index.create_schema()
            stack.callback(index.close)
            indexer = _start_indexer(index, net, fresh=fresh, interval=config.indexer_interval, stack=stack)
            dispatcher = Dispatcher(net.market, [net.worker], from_block=deployment.block)
            _start_thread(stack, "sterling-dispatcher", lambda stop: dispatcher.run(stop, interval=config.dispatcher_interval))
            services = GatewayServices.from_localnet(net, index, dev_accounts=accounts.dev, index_version=lambda: indexer.committed_block)
            app = create_app(settings, services=services)
            server = _Server(
                uvicorn.Config(
                    app, host=config.host, port=config.port, log_level="warning", lifespan="off",
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
                ),
                on_exit=app.state.feed.close,
            )  # fmt: skip
            url = f"http://{config.host}:{config.port}"

            def announce() -> None:
                while not server.started and not server.should_exit:
                    time.sleep(0.05)
                if server.started:
                    on_ready(url)

            threading.Thread(target=announce, name="sterling-announce", daemon=True).start()
            try:
                server.run()
            except KeyboardInterrupt:
                pass
            note("stopping", "gateway stopped; stopping dispatcher, indexer, enclaves and chain")
    finally:
        signal.signal(signal.SIGTERM, previous)


class UpFailed(SterlingError):
    """A ``sterling up`` child process exited early, never became healthy, or did not stop."""


@contextmanager
def spawned(
    state_dir: Path,
    *,
    log: Path,
    chain: ChainChoice = "anvil",
    port: int | None = None,
    start_timeout: float = 240.0,
    stop_timeout: float = 90.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``sterling up`` in a child process until the block ends, then stop it with Ctrl-C (SIGINT).

    Yields the gateway's base URL once ``/api/health`` answers, and the process. Output goes to ``log``.

    Raises:
        UpFailed: the process exited before it was healthy, was not healthy within ``start_timeout``
            seconds, or did not exit cleanly within ``stop_timeout`` seconds of Ctrl-C.
    """
    port = port or chain_mod.free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "marketplace.cli", "up", "--chain", chain, "--state-dir", str(state_dir), "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + start_timeout
        with httpx.Client(base_url=url, timeout=10) as client:
            while True:
                if process.poll() is not None:
                    raise UpFailed(f"sterling up exited with {process.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    if client.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise UpFailed(f"no healthy gateway within {start_timeout} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, process
        process.send_signal(signal.SIGINT)
        if process.wait(stop_timeout) != 0:
            raise UpFailed(f"sterling up exited with {process.returncode} after Ctrl-C:\n{log.read_text()[-3000:]}")
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
