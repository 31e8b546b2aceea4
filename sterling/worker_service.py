"""``sterling worker``: one operator's trainer enclave and its host as a service of its own (issue 17).

A worker runs on any machine that reaches the chain's JSON-RPC node, a key manager
(``sterling keymanager``) and the blobs (a gateway's ``/api/blobs``, or a folder). It launches a
trainer enclave, has the verifier beside the key manager certify it, registers it on-chain for its
operator, keeps the operator's stake, gives back what an earlier enclave of the operator left
claimed, and then follows the chain itself: it claims the jobs it can serve and runs them.

Workers coordinate through the chain alone. ``claimJob`` is atomic, so of two workers that try the
same job one wins and the other's transaction reverts (it moves on to other jobs); a worker that
stops leaves its claim to lapse, and any other worker re-claims the job (docs/jobs.md). Each worker
keeps two cursors in its state folder (``dispatcher.json`` for new jobs, ``recover.json`` for its
operator's claims), so its work per poll follows new events, not the market's history.

Health: ``GET /health`` on ``--health-port`` answers 200 with the worker's state while its poll loop
runs, and 503 when the last poll is older than :data:`STALE_AFTER_POLLS` intervals; it also says how many
jobs of earlier enclaves the start gave back or left to lapse.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from enclave_worker.remote import RemoteKeyManager, RemoteVerifier, ServiceUnreachable
from enclave_worker.sim_platform import SimPlatform
from enclave_worker.status import JobStatusBoard
from enclave_worker.trusted.onchain import Role
from enclave_worker.worker import Recovered, TrainerWorker
from marketplace.blobstore import BlobStore
from marketplace.errors import ConfigError
from marketplace.remote_blobs import GatewayBlobStore
from oracle.dispatcher import Dispatcher
from sterling.localnet import attest_and_register, ensure_operator_stake, trainer_launcher
from sterling.standalone import ChainView

logger = logging.getLogger(__name__)

K = TypeVar("K")

KEY_MANAGER_RETRY_SECONDS = 0.25
"""How often a starting worker asks a key manager that does not answer yet (``key_manager_wait``)."""
STALE_AFTER_POLLS = 10
"""The health endpoint answers 503 when no poll ended in this many intervals (at least 30 s)."""


@dataclass(frozen=True)
class WorkerOptions:
    """How a standalone worker reaches the other services, and what it runs with."""

    key_manager_url: str
    """The ``sterling keymanager`` service (its verifier certifies the trainer enclave)."""
    blobs: str
    """A gateway's URL (``http://…``: blobs over ``/api/blobs``, cached locally) or a shared folder."""
    state_dir: Path
    """Cursors, the blob cache, job status (unless ``status_dir``)."""
    sim_platform_key: Path
    """The simulated TEE platform's key (development only; the verifier trusts its public key)."""
    stake: float | None = None
    threads: int | None = None
    niceness: int = 0
    interval: float = 1.0
    health_host: str = "127.0.0.1"
    health_port: int | None = None
    key_manager_wait: float = 0.0
    """Seconds to keep asking a key manager that does not answer yet (one started beside the worker)."""
    status_dir: Path | None = None
    """The job status board (default ``<state_dir>/status``). Workers may share one: each job is a
    file of its own, replaced atomically, and one job runs on one worker at a time (its claim's)."""


def open_blobs(where: str, cache: Path) -> BlobStore | GatewayBlobStore:
    """The blob store at ``where``: a gateway URL (fetched over HTTP into ``cache``) or a folder."""
    if where.startswith(("http://", "https://")):
        return GatewayBlobStore(where, cache=cache)
    folder = Path(where)
    if not folder.is_dir():
        raise ConfigError(f"the blob folder {folder} does not exist (give a folder, or a gateway's http:// URL)")
    return BlobStore(folder)


class WorkerHealth:
    """What ``GET /health`` reports about a running worker."""

    def __init__(self, worker: TrainerWorker, dispatcher: Dispatcher, *, interval: float, recovered: list[Recovered] | None = None) -> None:
        self.worker = worker
        self.dispatcher = dispatcher
        self.recovered = list(recovered or [])
        self.stale_after = max(STALE_AFTER_POLLS * interval, 30.0)
        self.started = time.time()

    def report(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status (200 serving, 503 stalled) and the state."""
        now = time.time()
        last = self.dispatcher.last_poll
        age = None if last is None else round(now - last, 3)
        stuck = stalled(last, started=self.started, stale_after=self.stale_after, now=now)
        return (503 if stuck else 200), {
            "status": "stalled" if stuck else "serving",
            "operator": self.worker.operator.address,
            "enclave": self.worker.signer,
            "last_poll_age_s": age,
            "followed_to_block": self.dispatcher.followed_to,
            "running": self.dispatcher.in_flight,
            "completed": self.dispatcher.completed,
            "failed": sorted(self.dispatcher.failures),
            "enclave_relaunches": self.worker.relaunches,
            "recovered": {
                "given_back": sum(r.released for r in self.recovered),
                "left_to_lapse": sum(not r.released for r in self.recovered),
            },
        }

    def serve(self, host: str, port: int) -> ThreadingHTTPServer:
        """Answer ``GET /health`` on ``host:port`` from a daemon thread; the caller shuts the server down."""
        return serve_health(self.report, host, port, name="sterling-worker-health")


def serve_health(report: Callable[[], tuple[int, dict[str, Any]]], host: str, port: int, *, name: str) -> ThreadingHTTPServer:
    """Answer ``GET /health`` on ``host:port`` with ``report()`` (its status code, its JSON body) from a
    daemon thread named ``name``; anything else is 404. The caller shuts the server down.

    Used by the standalone services without an HTTP API of their own (``sterling worker``, ``sterling evaluator``).
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the standard library's name
            if self.path.split("?")[0] != "/health":
                self.send_error(404, "only /health is served here")
                return
            status, body = report()
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
            logger.debug("health: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def stalled(last: float | None, *, started: float, stale_after: float, now: float) -> bool:
    """Whether a poll loop that started at ``started`` and last polled at ``last`` (``None``: not yet) is stalled at ``now``."""
    return (now - started if last is None else now - last) > stale_after


def connect_key_manager(url: str, *, wait: float, stop: threading.Event, client: Callable[[str], K]) -> K:
    """``client`` (:class:`RemoteKeyManager`, or one of the key manager's sides, e.g.
    :class:`~enclave_worker.remote_keys.RemoteModelKeys`) of the key-manager service at ``url``,
    asked again every :data:`KEY_MANAGER_RETRY_SECONDS` for up to ``wait`` seconds while nothing
    answers there (or until ``stop``).

    Raises:
        ServiceUnreachable: nothing answered in time.
        NotServed: the key manager does not serve the side ``client`` asks for.
    """
    deadline, asked = time.monotonic() + wait, 0
    while True:
        try:
            return client(url)
        except ServiceUnreachable:
            if time.monotonic() >= deadline or stop.wait(KEY_MANAGER_RETRY_SECONDS):
                raise
            asked += 1
            if asked == 1:
                logger.info("the key manager at %s does not answer yet; asking again for up to %.0f s", url, wait)


def run_worker(view: ChainView, operator: LocalAccount, options: WorkerOptions, *, stop: threading.Event) -> None:
    """Start, register and stake a trainer enclave for ``operator``, then claim and run jobs until ``stop``.

    Raises:
        ConfigError: the platform key or the blob folder is missing, or the operator cannot pay its stake.
        ServiceUnreachable: the key manager did not answer (within ``options.key_manager_wait`` seconds).
        AttestationRejected: the verifier refused the enclave (its measurement not approved, say).
    """
    if not options.sim_platform_key.is_file():
        raise ConfigError(
            f"no platform key at {options.sim_platform_key}: a development worker needs the sim platform key "
            "the verifier trusts (sim-platform.pem in the state folder of `sterling up` or `sterling keymanager`)"
        )
    state = options.state_dir
    state.mkdir(parents=True, exist_ok=True)
    blobs = open_blobs(options.blobs, state / "blob-cache")
    platform = SimPlatform.load_or_create(options.sim_platform_key)
    ensure_operator_stake(view.market, operator, options.stake)
    # The enclave starts (it imports torch) while the key manager may still be starting too.
    enclave = platform.launch(Role.TRAINER, threads=options.threads, niceness=options.niceness)
    try:
        key_manager = connect_key_manager(options.key_manager_url, wait=options.key_manager_wait, stop=stop, client=RemoteKeyManager)
        verifier = RemoteVerifier(options.key_manager_url)
        attest_and_register(enclave, verifier, view.registry, operator)
    except BaseException:
        enclave.close()
        raise
    relaunch = trainer_launcher(platform, verifier, view.registry, operator, threads=options.threads, niceness=options.niceness)
    worker = TrainerWorker(
        enclave, operator=operator, market=view.market, key_manager=key_manager, blobs=blobs,
        status=JobStatusBoard(options.status_dir or state / "status"), relaunch=relaunch, confirmations=key_manager.confirmations,
    )  # fmt: skip
    health_server: ThreadingHTTPServer | None = None
    try:
        logger.info("trainer enclave %s registered for operator %s", worker.signer, to_checksum_address(operator.address))
        recovered = worker.recover(from_block=view.deployment.block, cursor_path=state / "recover.json")
        for r in recovered:
            logger.info("job %d of an earlier enclave %s: %s", r.job_id, r.enclave, r.reason)
        dispatcher = Dispatcher(view.market, [worker], from_block=view.deployment.block, cursor_path=state / "dispatcher.json")
        if options.health_port is not None:
            health = WorkerHealth(worker, dispatcher, interval=options.interval, recovered=recovered)
            health_server = health.serve(options.health_host, options.health_port)
            logger.info("health on http://%s:%d/health", options.health_host, health_server.server_address[1])
        logger.info("worker %s follows market %s", worker.signer, view.market.address)
        dispatcher.run(stop, interval=options.interval)
    finally:
        if health_server is not None:
            health_server.shutdown()
        worker.enclave.close()
        logger.info("worker %s stopped", worker.signer)
