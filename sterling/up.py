"""``sterling up``: a whole local Sterling behind one URL.

Starts (or connects to) the chain and deploys the contracts unless the state directory records a
deployment that is still there. On a node (anvil, which it starts as a child process, or
``--rpc-url``) every service is a child process, the same command that runs on another machine
(:mod:`sterling.compose`, docs/operations.md): ``sterling keymanager`` (the key-manager enclave's
trainer, model-key and competition-key sides and the attestation verifier), one ``sterling
worker`` per operator account (``up.trainers``), ``sterling indexer``, ``sterling inference``
(``up.serving``), ``sterling evaluator`` (``up.competitions``) and ``sterling gateway`` (API,
static UI, JSON-RPC relay, live events). This process does governance's part first, then only
watches them: they share the state directory's blob folder, and the workers write job progress to
its ``status/`` folder, which the gateway reads for the live timeline. A child that exits stops
everything, and ``sterling up`` exits non-zero naming it; the children get SIGTERM when this
process dies, even killed (Linux). On the embedded chain (in process, nothing another process
could reach) everything runs in this process instead, the gateway under uvicorn. Everything it
needs to come back after a restart lives in the state directory:

| file | what |
|---|---|
| ``anvil-state.json`` | the anvil chain (blocks, state), dumped on exit and every few seconds |
| ``accounts.json`` | governance, verifier, operator and development keys (mode 0600; local use only) |
| ``deployment.json`` | contract addresses and deployment block |
| ``index.db`` | the chain index (SQLite; ``--database-url`` for another database) |
| ``blobs/``, ``key-manager/``, ``status/``, ``sim-platform.pem`` | ciphertext, sealed data keys, job progress, the simulated platform key |
| ``services/`` | the children's logs (``<service>.log``), their key files, the workers' cursors |

What it runs comes from :class:`~marketplace.config.SterlingSettings` (the CLI's options are
flags over the environment and ``brownie-config.yaml``; ``docs/configuration.md``).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import Any

import httpx
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount

from enclave_worker.measurement import measure
from enclave_worker.sim_platform import SimPlatform
from enclave_worker.status import JobStatusBoard
from enclave_worker.trusted.onchain import Role
from marketplace import chain as chain_mod
from marketplace._files import write_atomic
from marketplace.abi import ERC20_ABI, load_artifact
from marketplace.chain import Chain, Wei, free_port, open_chain
from marketplace.competitions import CompetitionMarketClient
from marketplace.config import GatewaySettings, SterlingSettings, checkout_root
from marketplace.contracts import Deployment, MarketClient, RegistryClient, code_version, deploy
from marketplace.errors import ChainUnavailable, ConfigError, ContractReverted, SterlingError
from marketplace.model_market import ModelMarketClient
from oracle.dispatcher import Dispatcher
from oracle.index_db import IndexDatabase, default_url
from oracle.indexer import Indexer, IndexerChainMismatch
from sterling.compose import Composition, Network, Service, ServiceNotHealthy, rpc_url_of, wait_polling
from sterling.gateway import GatewayServices, create_app
from sterling.inference_service import redeem_periodically
from sterling.localnet import (
    LocalCore,
    LocalNet,
    LocalSetup,
    grant_roles,
    mint_test_token,
    start_competitions,
    start_enclaves,
    start_serving,
)
from sterling.standalone import GRACEFUL_SHUTDOWN_SECONDS, GatewayServer

logger = logging.getLogger(__name__)

StageFn = Callable[[str, str], None]
MIN_BALANCE = Wei(10**18)
FUNDING = Wei(10**21)
ANVIL_STATE_INTERVAL_SECONDS = 5
TRAINER_NICENESS = 10
"""The trainer enclave runs at a lower priority than the gateway it shares the machine with."""
THREAD_JOIN_SECONDS = 10.0
SERVICES_FOLDER = "services"
"""Where, in the state directory, the child processes keep their logs (``<name>.log``) and the workers their state."""
CHILD_POLL_SECONDS = 0.5
"""How often ``sterling up`` looks whether a child process exited."""
KEY_MANAGER_WAIT_SECONDS = 120.0
"""How long a worker, started before the key manager, waits for its routes."""


@dataclass(frozen=True)
class LocalAccounts:
    """The keys a local Sterling runs with, kept in ``accounts.json`` so roles survive restarts."""

    governance: LocalAccount
    verifier: LocalAccount
    operator: LocalAccount
    dev: tuple[LocalAccount, ...]
    extra_operators: tuple[LocalAccount, ...] = ()
    """Operators of the second and further trainer workers (``up.trainers``)."""

    @classmethod
    def load_or_create(cls, path: Path, *, dev_count: int, extra_operators: int = 0) -> LocalAccounts:
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
        extra = [k for k in keys.get("extra_operators", []) if isinstance(k, str)]
        while len(extra) < extra_operators:
            extra.append("0x" + bytes(Account.create().key).hex())
            changed = True
        keys["extra_operators"] = extra
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
                extra_operators=tuple(Account.from_key(k) for k in extra[:extra_operators]),
            )
        except ValueError as e:
            raise ConfigError(f"{path} holds an invalid key") from e

    def all(self) -> tuple[LocalAccount, ...]:
        return (self.governance, self.verifier, self.operator, *self.extra_operators, *self.dev)


def ensure_funded(chain: Chain, accounts: tuple[LocalAccount, ...]) -> None:
    """Top up accounts below 1 ETH from the node's development account (:meth:`Chain.fund`).

    Raises:
        ConfigError: on a network without an unlocked development account; the message lists
            the addresses to fund.
    """
    try:
        for account in accounts:
            chain.fund(account.address, FUNDING, minimum=MIN_BALANCE)
    except ChainUnavailable as e:
        poor = [a.address for a in accounts if chain.balance(a.address) < MIN_BALANCE]
        raise ConfigError(f"fund these accounts with at least 1 ETH each, then run `sterling up` again: {', '.join(poor)}") from e


TEST_TOKEN_RECORD = "test-token.json"
"""Where, in the state directory, ``--payment-token test`` records the test stablecoin it deployed."""
TEST_TOKEN_GRANT = 10_000
"""Whole test tokens each development account is topped up to at start (when it holds less than a tenth)."""


def ensure_payment_token(chain: Chain, choice: str | None, state_dir: Path, deployer: LocalAccount) -> str | None:
    """The ERC-20 the market is paid in: ``None`` (native currency), an address (checked to hold an
    ERC-20 on this chain), or ``"test"``: the test stablecoin recorded in the state directory,
    deployed when there is none on this chain yet.

    Raises:
        ConfigError: the address holds no contract, or not one answering ERC-20's ``decimals()``.
    """
    if choice is None:
        return None
    if choice != "test":
        address = chain.w3.to_checksum_address(choice)
        if not chain.w3.eth.get_code(address):
            raise ConfigError(f"no contract at {address} on chain {chain.chain_id}: --payment-token needs an ERC-20 there")
        try:
            chain.call(chain.w3.eth.contract(address=address, abi=ERC20_ABI).functions.decimals())
        except (ContractReverted, ValueError) as e:
            raise ConfigError(f"the contract at {address} does not answer ERC-20's decimals(): not a payment token") from e
        return str(address)
    record = state_dir / TEST_TOKEN_RECORD
    if record.exists():
        try:
            known = json.loads(record.read_text())
            if int(known["chain_id"]) == chain.chain_id and chain.w3.eth.get_code(chain.w3.to_checksum_address(known["address"])):
                return str(chain.w3.to_checksum_address(known["address"]))
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring unreadable test-token record %s", record)
    artifact = load_artifact("TestStablecoin", test=True)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    deploying = factory.constructor()
    deployed = str(chain.transact(deployer, deploying, name="deploy TestStablecoin").receipt["contractAddress"])  # type: ignore[arg-type]
    write_atomic(record, json.dumps({"chain_id": chain.chain_id, "address": deployed}).encode())
    logger.info("deployed the test stablecoin at %s", deployed)
    return deployed


def ensure_token_funded(chain: Chain, token: str, accounts: tuple[LocalAccount, ...]) -> None:
    """Mint the test stablecoin to ``accounts`` holding less than a tenth of :data:`TEST_TOKEN_GRANT`, up to it."""
    contract = chain.w3.eth.contract(address=chain.w3.to_checksum_address(token), abi=load_artifact("TestStablecoin", test=True)["abi"])
    grant = TEST_TOKEN_GRANT * 10 ** int(chain.call(contract.functions.decimals()))
    for account in accounts:
        held = int(chain.call(contract.functions.balanceOf(account.address)))
        if held < grant // 10:
            mint_test_token(chain, token, account, grant - held, why="test stablecoin")


def ensure_deployment(chain: Chain, governance: LocalAccount, path: Path, *, payment_token: str | None = None) -> tuple[Deployment, bool]:
    """The deployment recorded at ``path`` if its contracts are on this chain and paid in
    ``payment_token`` (``None``: the native currency), else a new one.

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
            elif (recorded.payment_token or "").lower() != (payment_token or "").lower():
                was, wanted = recorded.payment_token or "the native currency", payment_token or "the native currency"
                logger.warning("the recorded deployment is paid in %s, not %s; deploying again", was, wanted)
            elif recorded.chain_id == chain.chain_id and all(
                len(chain.w3.eth.get_code(chain.w3.to_checksum_address(a))) > 0 for a in (recorded.registry, recorded.market)
            ):
                logger.info("reusing deployment: registry %s, market %s", recorded.registry, recorded.market)
                return recorded, False
            else:
                logger.info("the recorded deployment is not on this chain; deploying again")
    deployment = deploy(chain, governance, payment_token=payment_token)
    deployment.save(path)
    return deployment, True


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


def _prepare_index(index: IndexDatabase, chain: Chain, deployment: Deployment, *, fresh: bool, confirmations: int) -> Indexer:
    """An indexer of ``deployment`` into ``index``, emptied first when the contracts are ``fresh``
    or the index is another chain's."""
    competitions = CompetitionMarketClient(chain, deployment.competitions) if deployment.competitions else None
    indexer = Indexer(
        index, market=MarketClient(chain, deployment.market), registry=RegistryClient(chain, deployment.registry),
        start_block=deployment.block, confirmations=confirmations, competitions=competitions,
    )  # fmt: skip
    if fresh:
        index.reset()
    try:
        indexer.cursor()
    except IndexerChainMismatch as e:
        logger.warning("%s", e)
        index.reset()
        indexer.cursor()
    return indexer


def _setup(settings: SterlingSettings, chain: Chain, deployment: Deployment, accounts: LocalAccounts) -> LocalSetup:
    return LocalSetup(
        chain, deployment, settings.state_dir.resolve(), governance=accounts.governance, verifier_key=accounts.verifier,
        operator=accounts.operator, confirmations=settings.chain_network.confirmations,
    )  # fmt: skip


def _compose_in_process(
    settings: SterlingSettings, chain: Chain, deployment: Deployment, accounts: LocalAccounts, index: IndexDatabase, *,
    fresh: bool, stack: ExitStack, note: StageFn,
) -> tuple[LocalNet, Indexer]:  # fmt: skip
    """The embedded chain's composition: trainer workers, their dispatcher and the indexer on threads of this process."""
    up, state_dir, confirmations = settings.up, settings.state_dir.resolve(), settings.chain_network.confirmations
    net = start_enclaves(
        _setup(settings, chain, deployment, accounts), say=note, trainer_threads=up.trainer_threads, trainer_niceness=TRAINER_NICENESS,
        operator_stake=up.operator_stake,
    )  # fmt: skip
    stack.callback(net.close)
    for operator in accounts.extra_operators:
        net.add_worker(operator, stake=up.operator_stake, threads=up.trainer_threads, niceness=TRAINER_NICENESS)
    running = [w.signer for w in net.workers]
    recovered = [r for w in net.workers for r in w.recover(from_block=deployment.block, keep=running)]
    if recovered:
        given_back = sum(r.released for r in recovered)
        note("recovered", f"{given_back} job(s) of the previous trainer given back, {len(recovered) - given_back} left to lapse")
    indexer = _prepare_index(index, chain, deployment, fresh=fresh, confirmations=confirmations)
    _start_thread(stack, "sterling-indexer", lambda stop: indexer.run(stop, interval=up.indexer_interval))
    dispatcher = Dispatcher(net.market, net.workers, from_block=deployment.block, cursor_path=state_dir / "dispatcher.json")
    _start_thread(stack, "sterling-dispatcher", lambda stop: dispatcher.run(stop, interval=up.dispatcher_interval))
    return net, indexer


def _compose_processes(
    settings: SterlingSettings, chain: Chain, deployment: Deployment, accounts: LocalAccounts, index: IndexDatabase, *,
    fresh: bool, rpc_url: str, stack: ExitStack, note: StageFn,
) -> Composition:  # fmt: skip
    """A node's back end as child processes: the key manager (its trainer, model and competition
    sides), one ``sterling worker`` per operator and the indexer (the workers not waited for yet:
    :func:`_wait_workers`). Governance's part is done first, as before services start on other machines."""
    up, state_dir, confirmations = settings.up, settings.state_dir.resolve(), settings.chain_network.confirmations
    key_manager_port = free_port()
    key_manager_url = f"http://127.0.0.1:{key_manager_port}"
    network = Network(
        rpc_url=rpc_url, deployment=deployment, deployment_path=state_dir / "deployment.json", platform_key=state_dir / "sim-platform.pem"
    )
    SimPlatform.load_or_create(network.platform_key)  # before the children read it
    blob_folder = state_dir / "blobs"
    blob_folder.mkdir(parents=True, exist_ok=True)  # the services refuse a missing folder
    grant_roles(_setup(settings, chain, deployment, accounts), measure(), roles=tuple(Role))  # before any child registers an enclave
    composition = Composition(network, state_dir / SERVICES_FOLDER, tied=True)
    stack.callback(composition.close)
    # The workers start first: importing torch and launching their enclaves takes longest, and they
    # wait for the key manager's routes, which come up meanwhile.
    for number, operator in enumerate((accounts.operator, *accounts.extra_operators), start=1):
        composition.worker(
            operator, key_manager_url, str(blob_folder), name=f"worker-{number}", threads=up.trainer_threads,
            interval=up.dispatcher_interval, stake=up.operator_stake, niceness=TRAINER_NICENESS, status=state_dir / "status",
            key_manager_wait=KEY_MANAGER_WAIT_SECONDS, healthy=False,
        )  # fmt: skip
    # Its state is this folder's key-manager/, where the deposits sealed by earlier runs are.
    key_manager = composition.keymanager(
        accounts.operator, accounts.verifier, confirmations=confirmations, state=state_dir, blobs=blob_folder, port=key_manager_port,
        healthy=False,
    )  # fmt: skip
    key_manager.wait_healthy("/health", timeout=KEY_MANAGER_WAIT_SECONDS)
    _prepare_index(index, chain, deployment, fresh=fresh, confirmations=confirmations)
    composition.indexer(settings.database_url or default_url(state_dir), interval=up.indexer_interval, confirmations=confirmations)
    note(
        "services",
        f"the key manager, {len(composition.services) - 2} worker(s) and the indexer as child processes "
        f"(key manager at {key_manager_url}); their logs: {composition.folder}/*.log",
    )
    return composition


def _wait_workers(children: list[Service], note: StageFn) -> None:
    """Wait until every worker polls the chain and the indexer still runs; note what the workers recovered.

    Raises:
        ServiceNotHealthy: a child exited, or a worker did not poll in time (the message ends with its log).
    """
    reports = [wait_polling(c) for c in children if c.name.startswith("worker-")]
    for child in children:
        if not child.alive():
            raise ServiceNotHealthy(f"{child.name} exited with {child.process.returncode} (log {child.log}):\n{child.tail()}")
    note("workers", ", ".join(f"{r['enclave']} for operator {r['operator']}" for r in reports))
    given_back = sum(r["recovered"]["given_back"] for r in reports)
    lapsing = sum(r["recovered"]["left_to_lapse"] for r in reports)
    if given_back or lapsing:
        note("recovered", f"{given_back} job(s) of the previous trainers given back, {lapsing} left to lapse")


def _gateway_services(
    core: LocalCore, index: IndexDatabase, *, status: JobStatusBoard | None, dev_accounts: tuple[LocalAccount, ...],
    index_version: Callable[[], tuple[int, int] | None] | None,
) -> GatewayServices:  # fmt: skip
    """What the gateway serves from: ``core``'s chain, contracts, blobs and key manager, the index and the workers' ``status``."""
    deployment = core.deployment
    return GatewayServices(
        chain=core.chain, market=core.market, registry=core.registry, blobs=core.blobs, index=index, deployment_block=deployment.block,
        key_manager=core.key_manager, status=status, dev_accounts=dev_accounts,
        attestation_formats=MappingProxyType({core.verifier.signer.address: "sim"}), index_version=index_version,
        model_market=ModelMarketClient(core.chain, deployment.model_market) if deployment.model_market else None,
        competitions=CompetitionMarketClient(core.chain, deployment.competitions) if deployment.competitions else None,
    )  # fmt: skip


def _serve_in_process(
    settings: SterlingSettings, chain: Chain, deployment: Deployment, accounts: LocalAccounts, index: IndexDatabase, *,
    fresh: bool, stack: ExitStack, note: StageFn, on_ready: Callable[[str], None],
) -> None:  # fmt: skip
    """The embedded chain: everything in this process, the gateway under uvicorn until Ctrl-C or SIGTERM."""
    up, gateway = settings.up, settings.gateway
    state_dir = settings.state_dir.resolve()
    net, indexer = _compose_in_process(settings, chain, deployment, accounts, index, fresh=fresh, stack=stack, note=note)
    services = _gateway_services(net, index, status=net.worker.status, dev_accounts=accounts.dev, index_version=lambda: indexer.version)
    if up.serving and deployment.model_market is not None:
        serving = start_serving(net, state_dir, operator=accounts.operator, threads=up.inference_threads)
        stack.callback(serving.close)
        services = dataclasses.replace(
            services, model_market=serving.model_market, model_keys=serving.model_keys, inference=serving.inference
        )
        inference, every = serving.inference, up.redeem_interval
        _start_thread(stack, "sterling-redeemer", lambda stop: redeem_periodically(inference, stop, interval=every))
        note("serving", f"inference enclave {serving.inference.signer} serves model market {serving.model_market.address}")
    if up.competitions and deployment.competitions is not None:
        contest = start_competitions(net, operator=accounts.operator)
        stack.callback(contest.close)
        services = dataclasses.replace(services, competitions=contest.competitions, competition_keys=contest.keys)
        evaluator, interval = contest.evaluator, up.evaluator_interval
        _start_thread(stack, "sterling-evaluator", lambda stop: evaluator.serve(stop, interval=interval))
        note("competitions", f"evaluator enclave {evaluator.signer} scores competition market {contest.competitions.address}")
    app = create_app(gateway, services=services)
    server = GatewayServer(
        uvicorn.Config(
            app, host=gateway.host, port=gateway.port, log_level="warning", lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        ),
        on_exit=app.state.feed.close,
    )  # fmt: skip
    url = gateway.url

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            on_ready(url)

    threading.Thread(target=announce, name="sterling-announce", daemon=True).start()
    # Everything built so far (contracts' ABIs, the app, torch, web3) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it and stalls
    # every request for a few hundred milliseconds (measured: p99 of 32 inference clients).
    gc.collect()
    gc.freeze()
    with suppress(KeyboardInterrupt):
        server.run()
    note("stopping", "gateway stopped; stopping workers, indexer, enclaves and chain")


def _serve_processes(
    settings: SterlingSettings, chain: Chain, deployment: Deployment, accounts: LocalAccounts, index: IndexDatabase, *,
    fresh: bool, rpc_url: str, stack: ExitStack, note: StageFn, on_ready: Callable[[str], None],
) -> None:  # fmt: skip
    """A node: every service a child process (:func:`_compose_processes`, then serving, evaluation
    and the gateway), watched until Ctrl-C or SIGTERM, or until one of them exits."""
    up, gateway = settings.up, settings.gateway
    state_dir = settings.state_dir.resolve()
    composition = _compose_processes(settings, chain, deployment, accounts, index, fresh=fresh, rpc_url=rpc_url, stack=stack, note=note)
    key_manager, blob_folder = composition.service("keymanager"), state_dir / "blobs"
    # The inference enclave lives in the gateway's process, as on one machine a hop between the two
    # would cost each query about as much again (docs/operations.md); `sterling inference` is for another machine.
    serving = up.serving and deployment.model_market is not None
    served = composition.gateway(
        settings.database_url or default_url(state_dir), blob_folder, key_manager=key_manager,
        status=state_dir / "status", dev_accounts=accounts.dev, attestation_formats={accounts.verifier.address: "sim"},
        host=gateway.host, port=gateway.port, settings=gateway_environment(gateway),
        models_operator=accounts.operator if serving else None, models_threads=up.inference_threads,
        redeem_interval=up.redeem_interval, healthy=False,
    )  # fmt: skip
    evaluator = None
    if up.competitions and deployment.competitions is not None:
        evaluator = composition.evaluator(
            accounts.operator, key_manager, blob_folder, interval=up.evaluator_interval, key_manager_wait=KEY_MANAGER_WAIT_SECONDS,
            healthy=False,
        )  # fmt: skip
    _wait_workers(composition.services, note)
    if evaluator is not None:
        health = evaluator.wait_healthy("/health")
        note("competitions", f"evaluator enclave {health['signer']} scores competition market {deployment.competitions}")
    served.wait_healthy("/api/health")
    if serving:
        note("serving", f"an inference enclave in the gateway's process serves model market {deployment.model_market}")
    on_ready(gateway.url)
    died: list[Service] = []
    with suppress(KeyboardInterrupt):
        while not (died := [c for c in composition.services if not c.alive()]):
            time.sleep(CHILD_POLL_SECONDS)
    if died:
        first = died[0]
        raise ServiceNotHealthy(
            f"{first.name} exited with {first.process.returncode} (log {first.log}); stopped everything:\n{first.tail()}"
        )
    note("stopping", "stopping the gateway, serving, evaluation, workers, indexer, key manager and chain")


def gateway_environment(gateway: GatewaySettings) -> dict[str, str]:
    """``gateway``'s settings as the ``STERLING_GATEWAY_*`` variables a ``sterling gateway`` child reads (as configured here)."""
    environment = {}
    for name, value in gateway.model_dump(mode="json").items():
        if value is not None:
            environment[f"STERLING_GATEWAY_{name.upper()}"] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return environment


def run_up(settings: SterlingSettings, *, on_ready: Callable[[str], None], say: StageFn | None = None) -> None:
    """Run everything until SIGINT or SIGTERM, then stop it all (the chain last, so it dumps its state).

    Args:
        settings: the chain (``network`` / ``rpc_url``), ``state_dir``, ``database_url``, and the
            ``gateway`` and ``up`` sections.
        on_ready: called with the URL once the gateway accepts connections.
        say: progress notes ``(stage, detail)`` while starting.

    Example:
        >>> run_up(get_settings(network="embedded"), on_ready=print)  # doctest: +SKIP
    """
    note = say or (lambda stage, detail: None)
    up = settings.up
    # Ctrl-C and SIGTERM stop it, even started where SIGINT is ignored (a background job of a
    # script): on a node nothing else (uvicorn, in process) would install a handler.
    previous = {number: signal.signal(number, _raise_interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    state_dir = settings.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        with ExitStack() as stack:
            chain = stack.enter_context(
                open_chain(settings, state_path=state_dir / "anvil-state.json", state_interval=ANVIL_STATE_INTERVAL_SECONDS)
            )
            note("chain", f"{chain.kind}, chain id {chain.chain_id}, block {chain.w3.eth.block_number}")
            accounts = LocalAccounts.load_or_create(
                state_dir / "accounts.json", dev_count=up.dev_accounts, extra_operators=up.trainers - 1
            )
            ensure_funded(chain, accounts.all())
            token = ensure_payment_token(chain, up.payment_token, state_dir, accounts.governance)
            if up.payment_token == "test" and token is not None:
                ensure_token_funded(chain, token, accounts.dev)
            deployment, fresh = ensure_deployment(chain, accounts.governance, state_dir / "deployment.json", payment_token=token)
            paid_in = f", paid in token {deployment.payment_token}" if deployment.payment_token else ""
            note("contracts", f"{'deployed' if fresh else 'reused'}: market {deployment.market}, registry {deployment.registry}{paid_in}")
            index = IndexDatabase(settings.database_url or default_url(state_dir))
            index.create_schema()
            stack.callback(index.close)
            rpc_url = rpc_url_of(chain)
            if rpc_url is None:  # the embedded chain: nothing another process could reach
                _serve_in_process(settings, chain, deployment, accounts, index, fresh=fresh, stack=stack, note=note, on_ready=on_ready)
            else:
                _serve_processes(
                    settings, chain, deployment, accounts, index, fresh=fresh, rpc_url=rpc_url, stack=stack, note=note, on_ready=on_ready
                )  # fmt: skip
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class UpFailed(SterlingError):
    """A ``sterling up`` child process exited early, never became healthy, or did not stop."""


@contextmanager
def spawned(
    state_dir: Path,
    *,
    log: Path,
    chain: str = "anvil",
    rpc_url: str | None = None,
    port: int | None = None,
    options: tuple[str, ...] = (),
    start_timeout: float = 240.0,
    stop_timeout: float = 90.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run ``sterling up`` in a child process until the block ends, then stop it with Ctrl-C (SIGINT).

    Yields the gateway's base URL once ``/api/health`` answers, and the process. Output goes to ``log``.
    ``rpc_url``: use that node (``--rpc-url``) instead of starting a ``chain`` of its own; ``options``:
    more of ``sterling up``'s options (``--payment-token test``, say).
    The child runs in the source checkout when there is one (so it reads the checkout's
    ``brownie-config.yaml``), else in the current directory.

    Raises:
        UpFailed: the process exited before it was healthy, was not healthy within ``start_timeout``
            seconds, or did not exit cleanly within ``stop_timeout`` seconds of Ctrl-C.
    """
    port = port or chain_mod.free_port()
    url = f"http://127.0.0.1:{port}"
    network = ["--rpc-url", rpc_url] if rpc_url is not None else ["--chain", chain]
    args = [sys.executable, "-m", "sterling.cli", "up", *network, "--state-dir", str(state_dir), "--port", str(port), *options]
    with log.open("ab") as out:
        process = subprocess.Popen(args, cwd=checkout_root(), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
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
