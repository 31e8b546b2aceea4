"""``sterling evaluator``: an evaluator enclave and its host as a service of their own.

An evaluator runs on any machine that reaches the chain's JSON-RPC node, a key manager
(``sterling keymanager``, serving its competition side) and the blobs (a gateway's ``/api/blobs``,
or a folder). It launches an evaluator enclave, has the verifier beside the key manager certify it,
registers it on-chain for its operator, and then follows the competition market: every
``--interval`` seconds it scores what is due (:class:`~enclave_worker.evaluator.EvaluatorService`),
with the keys of each scoring released by the key manager to its enclave alone.

Governance approves the evaluator measurement before the service starts: it refuses to start
otherwise (:class:`MeasurementNotApproved`), before launching an enclave, as it refuses a deployment
record without a competition market.

Health: ``GET /health`` on ``--health-port`` answers 200 with the evaluator's state while its loop
runs, and 503 when its last round is older than :data:`~sterling.worker_service.STALE_AFTER_POLLS`
intervals (at least 30 s), as ``sterling worker``'s does.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from enclave_worker.evaluator import EvaluatorService
from enclave_worker.measurement import measure
from enclave_worker.remote import RemoteVerifier
from enclave_worker.remote_keys import RemoteCompetitionKeys
from enclave_worker.sim_platform import SimPlatform
from enclave_worker.trusted.onchain import Role, Split
from marketplace.errors import ConfigError
from sterling.localnet import attest_and_register
from sterling.standalone import ChainView, check_approved
from sterling.worker_service import STALE_AFTER_POLLS, connect_key_manager, open_blobs, serve_health, stalled

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluatorOptions:
    """How a standalone evaluator reaches the other services, and what it runs with."""

    key_manager_url: str
    """The ``sterling keymanager`` service: its verifier certifies the enclave, its competition side releases the keys."""
    blobs: str
    """A gateway's URL (``http://…``: blobs over ``/api/blobs``, cached locally) or a shared folder."""
    state_dir: Path
    """The blob cache (``<state_dir>/blob-cache``, for a gateway's blobs)."""
    sim_platform_key: Path
    """The simulated TEE platform's key (development only; the verifier trusts its public key)."""
    threads: int | None = None
    interval: float = 2.0
    health_host: str = "127.0.0.1"
    health_port: int | None = None
    key_manager_wait: float = 0.0
    """Seconds to keep asking a key manager that does not answer yet (one started beside the evaluator)."""


class EvaluatorHealth:
    """What ``GET /health`` reports about a running evaluator."""

    def __init__(self, evaluator: EvaluatorService, *, interval: float) -> None:
        self.evaluator = evaluator
        self.stale_after = max(STALE_AFTER_POLLS * interval, 30.0)
        self.started = time.time()

    def report(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status (200 serving, 503 stalled) and the state."""
        now = time.time()
        last = self.evaluator.last_poll
        stuck = stalled(last, started=self.started, stale_after=self.stale_after, now=now)
        posted = self.evaluator.posted
        return (503 if stuck else 200), {
            "status": "stalled" if stuck else "serving",
            "signer": self.evaluator.signer,
            "operator": str(to_checksum_address(self.evaluator.operator.address)),
            "competitions": self.evaluator.competitions.address,
            "last_poll": last,
            "last_poll_age_s": None if last is None else round(now - last, 3),
            "scores_posted": sum(posted.values()),
            "scores_posted_by_split": {split.name.lower(): posted[split] for split in Split},
        }

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """Answer ``GET /health`` on ``host:port`` from a daemon thread; the caller shuts the server down."""
        return serve_health(self.report, host, port, name="sterling-evaluator-health")


def run_evaluator(view: ChainView, operator: LocalAccount, options: EvaluatorOptions, *, stop: threading.Event) -> None:
    """Start and register an evaluator enclave for ``operator``, then score the deployment's
    competitions every ``options.interval`` seconds until ``stop``.

    Raises:
        ConfigError: the deployment has no competition market, the platform key or the blob folder is
            missing, or the key manager serves another competition market.
        MeasurementNotApproved: governance has not approved the evaluator measurement.
        ServiceUnreachable: the key manager did not answer (within ``options.key_manager_wait`` seconds).
        NotServed: the key manager serves no competition market.
        AttestationRejected: the verifier refused the enclave.

    Example:
        >>> run_evaluator(ChainView.connect(url, Path("deployment.json")), operator, options, stop=stop)  # doctest: +SKIP
    """
    competitions = view.competitions()
    if competitions is None:
        raise ConfigError(
            f"the deployment of registry {view.deployment.registry} has no competition market (a record from before "
            "competitions existed): an evaluator has nothing to score; deploy again to run competitions"
        )
    if not options.sim_platform_key.is_file():
        raise ConfigError(
            f"no platform key at {options.sim_platform_key}: a development evaluator needs the sim platform key "
            "the verifier trusts (sim-platform.pem in the state folder of `sterling up` or `sterling keymanager`)"
        )
    # The sim platform measures this checkout's trusted code as it launches it: refuse before the launch (torch's import).
    check_approved(view.registry, Role.EVALUATOR, measure())
    state = options.state_dir
    state.mkdir(parents=True, exist_ok=True)
    blobs = open_blobs(options.blobs, state / "blob-cache")
    platform = SimPlatform.load_or_create(options.sim_platform_key)
    enclave = platform.launch(Role.EVALUATOR, threads=options.threads)
    keys: RemoteCompetitionKeys | None = None
    try:
        keys = connect_key_manager(options.key_manager_url, wait=options.key_manager_wait, stop=stop, client=RemoteCompetitionKeys)
        if keys.competitions != competitions.address:
            raise ConfigError(
                f"the key manager at {options.key_manager_url} serves competition market {keys.competitions}; "
                f"the deployment's is {competitions.address}"
            )
        tx = attest_and_register(enclave, RemoteVerifier(options.key_manager_url), view.registry, operator)
        evaluator = EvaluatorService(enclave, competitions=competitions, registry=view.registry, keys=keys, blobs=blobs, operator=operator)
    except BaseException:
        enclave.close()
        if keys is not None:
            keys.close()
        raise
    health_server: ThreadingHTTPServer | None = None
    try:
        logger.info(
            "evaluator enclave %s registered for operator %s in tx %s (measurement %s, sim attestation: development only)",
            evaluator.signer, to_checksum_address(operator.address), tx.tx_hash, enclave.measurement.hex(),
        )  # fmt: skip
        if options.health_port is not None:
            health_server = EvaluatorHealth(evaluator, interval=options.interval).serve(options.health_host, options.health_port)
            logger.info("health on http://%s:%d/health", options.health_host, health_server.server_address[1])
        logger.info("evaluator %s scores competition market %s", evaluator.signer, competitions.address)
        evaluator.serve(stop, interval=options.interval)
    finally:
        if health_server is not None:
            health_server.shutdown()
        enclave.close()
        keys.close()
        logger.info("evaluator %s stopped after posting %d scores", evaluator.signer, sum(evaluator.posted.values()))
