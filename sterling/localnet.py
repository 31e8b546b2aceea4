"""Bring up a complete local Sterling deployment on a connected chain.

Deploys the contracts; starts a key-manager and a trainer enclave on the simulated platform;
approves their measurement and a verifier as governance; attests and registers both enclaves;
deposits the operator's stake (claims need a stake of at least a job's Σ prices); and wires the
key-manager host and the trainer worker (which relaunches its enclave if it dies) to the chain and
a blob store. Used by ``sterling demo``, ``sterling up`` on the embedded chain (which reuses a persisted
deployment through :func:`start_enclaves`; on a node its services are processes of their own, and
it does only governance's part here, :func:`grant_roles`) and by the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from enclave_worker.competition_keys import CompetitionKeyService
from enclave_worker.evaluator import EvaluatorService
from enclave_worker.keymanager import KeyManagerService
from enclave_worker.model_keys import ModelKeyService
from enclave_worker.remote import Certifier
from enclave_worker.serving import InferenceService
from enclave_worker.sim_platform import LaunchedEnclave, SimPlatform
from enclave_worker.status import JobStatusBoard
from enclave_worker.trusted.onchain import Role
from enclave_worker.worker import TrainerWorker
from marketplace.abi import ERC20_ABI, load_artifact
from marketplace.blobstore import BlobStore
from marketplace.chain import Chain, TxResult, Wei
from marketplace.competitions import CompetitionMarketClient
from marketplace.contracts import DEFAULT_CLAIM_LEASE, Deployment, MarketClient, RegistryClient, deploy
from marketplace.errors import ConfigError, ContractReverted
from marketplace.model_market import ModelMarketClient
from oracle.verifier import AttestationVerifier

logger = logging.getLogger(__name__)

DEFAULT_OPERATOR_STAKE_NATIVE = 10.0
"""The operator's stake in a market paying in the native currency, in whole units (10 ETH)."""
DEFAULT_OPERATOR_STAKE_TOKENS = 10_000.0
"""The operator's stake in a market paying in an ERC-20 token, in whole tokens."""
@dataclass
class LocalCore:
    """A local deployment's chain side, verifier and key manager, without trainer workers (``sterling
    up`` runs those as processes of their own); :meth:`close` stops the key-manager enclave."""

    chain: Chain
    deployment: Deployment
    registry: RegistryClient
    market: MarketClient
    blobs: BlobStore
    platform: SimPlatform
    governance: LocalAccount
    operator: LocalAccount
    verifier: AttestationVerifier
    key_manager: KeyManagerService
    measurement: bytes
    gas: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        self.key_manager.enclave.close()


@dataclass
class LocalNet(LocalCore):
    """Everything a local deployment consists of, trainer workers included; :meth:`close` stops the enclave processes."""

    worker: TrainerWorker = field(kw_only=True)
    extra_workers: list[TrainerWorker] = field(default_factory=list)
    """Trainer workers added with :meth:`add_worker` (other operators, say)."""

    @property
    def workers(self) -> list[TrainerWorker]:
        return [self.worker, *self.extra_workers]

    def add_worker(
        self,
        operator: LocalAccount | None = None,
        *,
        stake: float | None = None,
        threads: int | None = None,
        niceness: int = 0,
        **options: object,
    ) -> TrainerWorker:
        """Start, register and stake one more trainer worker, for ``operator`` (default: a new account).

        ``threads`` and ``niceness`` bound its enclave as in :func:`start_enclaves`; ``options`` go
        to :class:`TrainerWorker` (``heartbeat_interval``).
        """
        operator = operator or self.chain.new_account()
        ensure_operator_stake(self.market, operator, stake)
        relaunch = trainer_launcher(self.platform, self.verifier, self.registry, operator, threads=threads, niceness=niceness)
        options.setdefault("confirmations", self.key_manager.confirmations)  # it waits as long as the key manager asks
        worker = TrainerWorker(
            relaunch(), operator=operator, market=self.market, key_manager=self.key_manager, blobs=self.blobs,
            relaunch=relaunch, **options,  # type: ignore[arg-type]
        )  # fmt: skip
        self.extra_workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.enclave.close()
        super().close()


def attest_and_register(
    launched: LaunchedEnclave, verifier: Certifier, registry: RegistryClient, operator: LocalAccount
) -> TxResult:
    """Challenge an enclave, have the verifier certify its evidence, and register it for ``operator``."""
    claims, evidence = launched.attest(verifier.challenge())
    certificate, signature = verifier.certify(evidence=evidence, claims=claims, operator=operator.address)
    return registry.register(operator, certificate, signature)


def stake_units(market: MarketClient, amount: float | None) -> Wei:
    """``amount`` whole units of the market's payment currency (ETH, or tokens) in its smallest unit.

    ``None``: the default stake, :data:`DEFAULT_OPERATOR_STAKE_NATIVE` ETH or
    :data:`DEFAULT_OPERATOR_STAKE_TOKENS` tokens.
    """
    token = market.payment_token()
    if token is None:
        return Wei(int(round((DEFAULT_OPERATOR_STAKE_NATIVE if amount is None else amount) * 10**18)))
    decimals = int(market.chain.call(market.chain.w3.eth.contract(address=to_checksum_address(token), abi=ERC20_ABI).functions.decimals()))
    return Wei(int(round((DEFAULT_OPERATOR_STAKE_TOKENS if amount is None else amount) * 10**decimals)))


def mint_test_token(chain: Chain, token: str, account: LocalAccount, amount: int, *, why: str) -> TxResult:
    """Mint ``amount`` units of a token anyone may mint (the test stablecoin of local deployments) to ``account``, sent by it.

    Raises:
        ContractReverted: the token does not let ``account`` mint.
    """
    minter = chain.w3.eth.contract(address=to_checksum_address(token), abi=load_artifact("TestStablecoin", test=True)["abi"])
    return chain.transact(account, minter.functions.mint(account.address, amount), name=f"mint ({why})")


def ensure_operator_stake(market: MarketClient, operator: LocalAccount, amount: float | None = None) -> TxResult | None:
    """Top ``operator``'s stake up to ``amount`` whole units of the payment currency (:func:`stake_units`).

    A claim needs a stake of at least the job's Σ prices (``docs/jobs.md``). In a token market
    an operator short of tokens gets them minted when the token lets anyone mint (the test
    stablecoins of local deployments).

    Raises:
        ConfigError: the operator cannot pay the stake (the message says how much is missing).
    """
    wanted = stake_units(market, amount)
    missing = wanted - market.stake_of(operator.address).amount
    if missing <= 0:
        return None
    token = market.payment_token()
    if token is not None and market.payment_balance(operator.address) < missing:
        shortfall = missing - market.payment_balance(operator.address)
        try:
            mint_test_token(market.chain, token, operator, shortfall, why="operator stake")
        except (ContractReverted, ValueError) as e:
            raise ConfigError(f"the operator {operator.address} needs {shortfall} more units of token {token} for its stake") from e
    elif token is None and market.chain.balance(operator.address) < missing:
        raise ConfigError(f"the operator {operator.address} needs {missing} more wei for its stake")
    tx = market.ensure_stake(operator, wanted)
    logger.info("operator %s staked up to %d", operator.address, wanted)
    return tx


def trainer_launcher(
    platform: SimPlatform,
    verifier: Certifier,
    registry: RegistryClient,
    operator: LocalAccount,
    *,
    threads: int | None = None,
    niceness: int = 0,
) -> Callable[[], LaunchedEnclave]:
    """A callback that launches a fresh trainer enclave and registers it for ``operator`` (a worker's ``relaunch``)."""

    def launch() -> LaunchedEnclave:
        enclave = platform.launch(Role.TRAINER, threads=threads, niceness=niceness)
        try:
            attest_and_register(enclave, verifier, registry, operator)
        except BaseException:
            enclave.close()
            raise
        logger.info("trainer enclave %s registered for operator %s", to_checksum_address(enclave.process.signer), operator.address)
        return enclave

    return launch


def bring_up(
    chain: Chain,
    state_dir: Path,
    *,
    say: Callable[[str, str], None] | None = None,
    payment_token: str | None = None,
    claim_lease: int = DEFAULT_CLAIM_LEASE,
    operator_stake: float | None = None,
) -> LocalNet:
    """Deploy and start a local Sterling on ``chain``, keeping files under ``state_dir``.

    Args:
        payment_token: an ERC-20 token already deployed on ``chain`` for the market to pay in;
            ``None`` for the native currency.
        claim_lease: the market's claim lease in seconds (``JobMarket.claimLease``).
        operator_stake: the operator's stake in whole units of the payment currency
            (default: 10 ETH, or 10 000 tokens; see :func:`ensure_operator_stake`).
    """
    note = say or (lambda stage, detail: None)
    governance, verifier_key, operator = (chain.new_account() for _ in range(3))
    deployment = deploy(chain, governance, payment_token=payment_token, claim_lease=claim_lease)
    gas = {name: used for name, used in chain.gas_log if name.startswith("deploy")}
    note("deployed", f"registry {deployment.registry}, market {deployment.market}")
    setup = LocalSetup(chain, deployment, state_dir, governance=governance, verifier_key=verifier_key, operator=operator)
    net = start_enclaves(setup, say=say, operator_stake=operator_stake)
    net.gas = gas | net.gas
    return net


@dataclass(frozen=True)
class LocalSetup:
    """What a local deployment's enclaves start from: the chain, the deployment, the state folder
    (``sim-platform.pem``, ``blobs/``, ``key-manager/``) and the accounts of the roles."""

    chain: Chain
    deployment: Deployment
    state_dir: Path
    governance: LocalAccount
    verifier_key: LocalAccount
    operator: LocalAccount
    """The account the key-manager (and the first trainer) enclave is registered for."""
    confirmations: int = 0
    """Blocks the key manager waits for on a claim (or a purchase) before it releases a key for it
    (:class:`~enclave_worker.keymanager.KeyManagerService`)."""


def start_enclaves(
    setup: LocalSetup,
    *,
    say: Callable[[str, str], None] | None = None,
    trainer_threads: int | None = None,
    trainer_niceness: int = 0,
    operator_stake: float | None = None,
) -> LocalNet:
    """Start a key-manager and a trainer enclave for an existing deployment and register both.

    ``trainer_threads`` and ``trainer_niceness`` bound the trainer's share of a machine it shares
    with other services (see :meth:`EnclaveProcess.start`). ``operator_stake`` is the stake the
    operator keeps deposited, in whole units of the payment currency (default: 10 ETH or 10 000
    tokens; :func:`ensure_operator_stake`). The worker relaunches (and registers) a new trainer
    enclave when its enclave dies.

    Idempotent on-chain set-up: the measurement is approved and the verifier granted its role
    only if they are not already, so ``sterling up`` can run this again on a persisted chain
    (every start launches fresh enclaves, which register their new keys).
    """
    note = say or (lambda stage, detail: None)
    core, trainer_enclave = _start_core(setup, say=say, threads=trainer_threads, niceness=trainer_niceness)
    operator = setup.operator
    try:
        staked = ensure_operator_stake(core.market, operator, operator_stake)
        if staked is not None:
            core.gas["depositStake (operator)"] = staked.gas_used
        note("staked", f"operator {operator.address} stake {core.market.stake_of(operator.address).amount}")
        relaunch = trainer_launcher(
            core.platform, core.verifier, core.registry, operator, threads=trainer_threads, niceness=trainer_niceness
        )
        worker = TrainerWorker(
            trainer_enclave, operator=operator, market=core.market, key_manager=core.key_manager, blobs=core.blobs,
            status=JobStatusBoard(setup.state_dir / "status"), relaunch=relaunch, confirmations=setup.confirmations,
        )  # fmt: skip
    except BaseException:
        trainer_enclave.close()
        core.close()
        raise
    return LocalNet(**{f.name: getattr(core, f.name) for f in fields(LocalCore)}, worker=worker)


ROLE_LABELS = {Role.TRAINER: "trainer", Role.KEY_MANAGER: "key manager"}
"""How the gas table names a role's approval (the others by their lower-case names)."""


def grant_roles(
    setup: LocalSetup, measurement: bytes, *, roles: tuple[Role, ...] = (Role.TRAINER, Role.KEY_MANAGER)
) -> dict[str, int]:
    """Governance's part for a local deployment's enclaves: ``measurement`` approved for ``roles``
    (the trainer's and the key manager's unless told) and the verifier's role granted, unless they
    are already (``sterling up`` on a node, before its services start).

    Returns:
        The gas of each transaction sent, by label.
    """
    registry, governance, gas = RegistryClient(setup.chain, setup.deployment.registry), setup.governance, {}
    for role in roles:
        if not registry.is_measurement_approved(role, measurement):
            label = ROLE_LABELS.get(role, role.name.lower())
            gas[f"approveMeasurement ({label})"] = registry.approve_measurement(governance, role, measurement).gas_used
    if not registry.is_verifier(setup.verifier_key.address):
        gas["grantRole (verifier)"] = registry.add_verifier(governance, setup.verifier_key.address).gas_used
    return gas


def _start_core(
    setup: LocalSetup, *, say: Callable[[str, str], None] | None, threads: int | None, niceness: int
) -> tuple[LocalCore, LaunchedEnclave]:
    """The key manager and a trainer enclave (``threads``, ``niceness``), both registered."""
    note = say or (lambda stage, detail: None)
    chain, deployment, governance, operator = setup.chain, setup.deployment, setup.governance, setup.operator
    gas: dict[str, int] = {}

    def record(label: str, tx: TxResult) -> None:
        gas[label] = tx.gas_used

    registry = RegistryClient(chain, deployment.registry)
    market = MarketClient(chain, deployment.market)
    platform = SimPlatform.load_or_create(setup.state_dir / "sim-platform.pem")
    # Both trusted processes import torch on start; launching them side by side halves the wait.
    with ThreadPoolExecutor(max_workers=2) as pool:
        launches = [
            pool.submit(platform.launch, Role.KEY_MANAGER), pool.submit(platform.launch, Role.TRAINER, threads=threads, niceness=niceness)
        ]
    failures = [f.exception() for f in launches if f.exception() is not None]
    if failures:
        for f in launches:
            if f.exception() is None:
                f.result().close()
        raise failures[0]  # type: ignore[misc]
    enclaves = [f.result() for f in launches]
    key_manager_enclave, trainer_enclave = enclaves
    try:
        measurement = key_manager_enclave.measurement
        gas.update(grant_roles(setup, measurement))
        verifier = AttestationVerifier(signer=setup.verifier_key, registry=registry, platform_public_key=platform.public_key)
        record("register (key manager)", attest_and_register(key_manager_enclave, verifier, registry, operator))
        record("register (trainer)", attest_and_register(trainer_enclave, verifier, registry, operator))
        note("attested", f"measurement {measurement.hex()[:16]}…, sim attestation (development only)")
        key_manager = KeyManagerService(
            key_manager_enclave, market=market, registry=registry, state_dir=setup.state_dir / "key-manager",
            confirmations=setup.confirmations,
        )  # fmt: skip
    except BaseException:
        for enclave in enclaves:
            enclave.close()
        raise
    core = LocalCore(
        chain=chain, deployment=deployment, registry=registry, market=market, blobs=BlobStore(setup.state_dir / "blobs"),
        platform=platform, governance=governance, operator=operator, verifier=verifier, key_manager=key_manager,
        measurement=measurement, gas=gas,
    )  # fmt: skip
    return core, trainer_enclave


def _launch_registered(net: LocalCore, role: Role, operator: LocalAccount, threads: int | None) -> LaunchedEnclave:
    """Launch an enclave of ``role``, approve its measurement if governance has not yet (local
    deployments only) and register it for ``operator``."""
    launched = net.platform.launch(role, threads=threads)
    try:
        if not net.registry.is_measurement_approved(role, launched.measurement):
            net.registry.approve_measurement(net.governance, role, launched.measurement)
        attest_and_register(launched, net.verifier, net.registry, operator)
    except BaseException:
        launched.close()
        raise
    return launched


@dataclass
class LocalServing:
    """The serving half of a local deployment: the model market, an inference enclave and its host."""

    model_market: ModelMarketClient
    model_keys: ModelKeyService
    inference: InferenceService
    operator: LocalAccount

    def close(self) -> None:
        self.inference.close()
        self.inference.enclave.close()


def start_serving(
    net: LocalCore, state_dir: Path, *, operator: LocalAccount | None = None, threads: int | None = 1, **options: Any
) -> LocalServing:
    """Approve the inference measurement, launch and register an inference enclave for ``operator``
    (default: the trainer's operator) with ``threads`` torch threads (``None``: one per core) and
    serve ``net``'s model market from it.

    ``options`` go to :class:`~enclave_worker.serving.InferenceService` (``max_batch``, ``max_wait``, ...).

    Raises:
        ConfigError: the deployment has no model market (a record from before serving existed).
    """
    if net.deployment.model_market is None:
        raise ConfigError("this deployment has no model market; deploy again to serve models")
    operator = operator or net.operator
    model_market = ModelMarketClient(net.chain, net.deployment.model_market)
    launched = _launch_registered(net, Role.INFERENCE, operator, threads)
    try:
        model_keys = ModelKeyService(net.key_manager, model_market, blobs=net.blobs)
        inference = InferenceService(
            launched, model_market=model_market, registry=net.registry, key_manager=model_keys, blobs=net.blobs,
            state_dir=state_dir / "inference", operator=operator, **options,
        )  # fmt: skip
    except BaseException:
        launched.close()
        raise
    return LocalServing(model_market=model_market, model_keys=model_keys, inference=inference, operator=operator)


@dataclass
class LocalCompetitions:
    """The competition half of a local deployment: the competition market, the key manager's
    competition side and an evaluator enclave with its host."""

    competitions: CompetitionMarketClient
    keys: CompetitionKeyService
    evaluator: EvaluatorService
    operator: LocalAccount

    def close(self) -> None:
        self.evaluator.enclave.close()


def start_competitions(net: LocalCore, *, operator: LocalAccount | None = None, threads: int | None = 1) -> LocalCompetitions:
    """Approve the evaluator measurement, launch and register an evaluator enclave for ``operator``
    (default: the trainer's operator) with ``threads`` torch threads, and score ``net``'s
    competition market with it.

    Raises:
        ConfigError: the deployment has no competition market (a record from before competitions existed).
    """
    if net.deployment.competitions is None:
        raise ConfigError("this deployment has no competition market; deploy again to run competitions")
    operator = operator or net.operator
    competitions = CompetitionMarketClient(net.chain, net.deployment.competitions)
    launched = _launch_registered(net, Role.EVALUATOR, operator, threads)
    try:
        keys = CompetitionKeyService(net.key_manager, competitions, blobs=net.blobs)
        evaluator = EvaluatorService(
            launched, competitions=competitions, registry=net.registry, keys=keys, blobs=net.blobs, operator=operator
        )
    except BaseException:
        launched.close()
        raise
    return LocalCompetitions(competitions=competitions, keys=keys, evaluator=evaluator, operator=operator)
