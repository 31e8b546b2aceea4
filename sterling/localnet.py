"""Bring up a complete local Sterling deployment on a connected chain.

Deploys the contracts; starts a key-manager and a trainer enclave on the simulated platform;
approves their measurement and a verifier as governance; attests and registers both enclaves;
and wires the key-manager host and the trainer worker to the chain and a blob store. Used by
``sterling demo``, ``sterling up`` (which reuses a persisted deployment through
:func:`start_enclaves`) and by the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from enclave_worker.keymanager import KeyManagerService
from enclave_worker.sim_platform import LaunchedEnclave, SimPlatform
from enclave_worker.status import JobStatusBoard
from enclave_worker.trusted.onchain import Role
from enclave_worker.worker import TrainerWorker
from marketplace.blobstore import BlobStore
from marketplace.chain import Chain, TxResult
from marketplace.contracts import Deployment, MarketClient, RegistryClient, deploy
from oracle.verifier import AttestationVerifier

logger = logging.getLogger(__name__)


@dataclass
class LocalNet:
    """Everything a local deployment consists of; :meth:`close` stops the enclave processes."""

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
    worker: TrainerWorker
    measurement: bytes
    gas: dict[str, int] = field(default_factory=dict)

    def close(self) -> None:
        self.worker.enclave.close()
        self.key_manager.enclave.close()


def attest_and_register(
    launched: LaunchedEnclave, verifier: AttestationVerifier, registry: RegistryClient, operator: LocalAccount
) -> TxResult:
    """Challenge an enclave, have the verifier certify its evidence, and register it for ``operator``."""
    claims, evidence = launched.attest(verifier.challenge())
    certificate, signature = verifier.certify(evidence=evidence, claims=claims, operator=operator.address)
    return registry.register(operator, certificate, signature)


def bring_up(
    chain: Chain, state_dir: Path, *, say: Callable[[str, str], None] | None = None, payment_token: str | None = None
) -> LocalNet:
    """Deploy and start a local Sterling on ``chain``, keeping files under ``state_dir``.

    Args:
        payment_token: an ERC-20 token already deployed on ``chain`` for the market to pay in;
            ``None`` for the native currency.
    """
    note = say or (lambda stage, detail: None)
    governance, verifier_key, operator = (chain.new_account() for _ in range(3))
    deployment = deploy(chain, governance, payment_token=payment_token)
    gas = {name: used for name, used in chain.gas_log if name.startswith("deploy")}
    note("deployed", f"registry {deployment.registry}, market {deployment.market}")
    net = start_enclaves(chain, deployment, state_dir, governance=governance, verifier_key=verifier_key, operator=operator, say=say)
    net.gas = gas | net.gas
    return net


def start_enclaves(
    chain: Chain,
    deployment: Deployment,
    state_dir: Path,
    *,
    governance: LocalAccount,
    verifier_key: LocalAccount,
    operator: LocalAccount,
    say: Callable[[str, str], None] | None = None,
    trainer_threads: int | None = None,
    trainer_niceness: int = 0,
) -> LocalNet:
    """Start a key-manager and a trainer enclave for an existing deployment and register both.

    ``trainer_threads`` and ``trainer_niceness`` bound the trainer's share of a machine it shares
    with other services (see :meth:`EnclaveProcess.start`).

    Idempotent on-chain set-up: the measurement is approved and the verifier granted its role
    only if they are not already, so ``sterling up`` can run this again on a persisted chain
    (every start launches fresh enclaves, which register their new keys).
    """
    note = say or (lambda stage, detail: None)
    gas: dict[str, int] = {}

    def record(label: str, tx: TxResult) -> None:
        gas[label] = tx.gas_used

    registry = RegistryClient(chain, deployment.registry)
    market = MarketClient(chain, deployment.market)
    platform = SimPlatform.load_or_create(state_dir / "sim-platform.pem")
    # Both trusted processes import torch on start; launching them side by side halves the wait.
    with ThreadPoolExecutor(max_workers=2) as pool:
        launches = [
            pool.submit(platform.launch, Role.KEY_MANAGER),
            pool.submit(platform.launch, Role.TRAINER, threads=trainer_threads, niceness=trainer_niceness),
        ]
    failures = [f.exception() for f in launches if f.exception() is not None]
    if failures:
        for f in launches:
            if f.exception() is None:
                f.result().close()
        raise failures[0]  # type: ignore[misc]
    key_manager_enclave, trainer_enclave = (f.result() for f in launches)
    try:
        measurement = trainer_enclave.measurement
        for role, label in ((Role.TRAINER, "trainer"), (Role.KEY_MANAGER, "key manager")):
            if not registry.is_measurement_approved(role, measurement):
                record(f"approveMeasurement ({label})", registry.approve_measurement(governance, role, measurement))
        if not registry.is_verifier(verifier_key.address):
            record("grantRole (verifier)", registry.add_verifier(governance, verifier_key.address))
        verifier = AttestationVerifier(signer=verifier_key, registry=registry, platform_public_key=platform.public_key)
        record("register (key manager)", attest_and_register(key_manager_enclave, verifier, registry, operator))
        record("register (trainer)", attest_and_register(trainer_enclave, verifier, registry, operator))
        note("attested", f"measurement {measurement.hex()[:16]}…, sim attestation (development only)")
        blobs = BlobStore(state_dir / "blobs")
        key_manager = KeyManagerService(key_manager_enclave, market=market, registry=registry, state_dir=state_dir / "key-manager")
        worker = TrainerWorker(
            trainer_enclave, operator=operator, market=market, key_manager=key_manager, blobs=blobs,
            status=JobStatusBoard(state_dir / "status"),
        )
    except BaseException:
        trainer_enclave.close()
        key_manager_enclave.close()
        raise
    return LocalNet(
        chain=chain,
        deployment=deployment,
        registry=registry,
        market=market,
        blobs=blobs,
        platform=platform,
        governance=governance,
        operator=operator,
        verifier=verifier,
        key_manager=key_manager,
        worker=worker,
        measurement=measurement,
        gas=gas,
    )
