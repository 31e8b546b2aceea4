"""Sterling's read side as services of their own, for several machines (issue 17): ``sterling
indexer`` follows the chain into a shared database, and any number of ``sterling gateway``
processes serve the API and the UI from that database, the chain and a blob folder.

Neither needs a secret: the indexer only reads the chain, a gateway only reads the index and relays
signed transactions (``/api/rpc``). What they share is the chain's JSON-RPC URL, the deployment
record (``deployment.json`` as ``sterling up`` writes it) and the database URL (PostgreSQL when
several machines share it). A standalone gateway forwards providers' key deposits to a ``sterling
keymanager`` service when given its URL; it has no workers or enclaves behind it: the routes that
relay to the key manager's model and competition sides answer 404 and say so (docs/operations.md);
``sterling up`` composes everything on one machine.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount

from enclave_worker.status import JobStatusBoard
from enclave_worker.trusted.onchain import Role
from marketplace.blobstore import BlobStore
from marketplace.chain import Chain, connect_rpc
from marketplace.competitions import CompetitionMarketClient
from marketplace.contracts import Deployment, MarketClient, RegistryClient
from marketplace.errors import AttestationRejected, ConfigError
from marketplace.model_market import ModelMarketClient
from oracle.index_db import IndexDatabase
from oracle.indexer import IndexedRange, Indexer

if TYPE_CHECKING:
    from enclave_worker.remote_keys import RemoteCompetitionKeys, RemoteModelKeys
    from sterling.inference_service import InferenceSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChainView:
    """The chain and the deployment a standalone service follows."""

    chain: Chain
    deployment: Deployment
    market: MarketClient
    registry: RegistryClient

    @classmethod
    def connect(cls, rpc_url: str, deployment_path: Path) -> ChainView:
        """Connect to the node at ``rpc_url`` and check that the recorded deployment is on it.

        Raises:
            ConfigError: the record is unreadable, or of another chain, or its contracts are not there.
            ChainUnavailable: the node does not answer.
        """
        deployment = Deployment.load(deployment_path)
        chain = connect_rpc(rpc_url, kind="rpc")
        if str(chain.w3.client_version).lower().startswith("anvil"):
            # A development node mining only on transactions: its time stands still while nothing is
            # sent, so the dispatcher mines a block when a lease or deadline passed in wall time.
            chain.kind = "anvil"
        if chain.chain_id != deployment.chain_id:
            raise ConfigError(f"{deployment_path} records chain {deployment.chain_id}; the node at {rpc_url} is chain {chain.chain_id}")
        for name, address in (("registry", deployment.registry), ("market", deployment.market)):
            if not chain.w3.eth.get_code(chain.w3.to_checksum_address(address)):
                raise ConfigError(f"no contract at the recorded {name} address {address} on the node at {rpc_url}")
        return cls(chain, deployment, MarketClient(chain, deployment.market), RegistryClient(chain, deployment.registry))

    def competitions(self) -> CompetitionMarketClient | None:
        return CompetitionMarketClient(self.chain, self.deployment.competitions) if self.deployment.competitions else None

    def model_market(self) -> ModelMarketClient | None:
        return ModelMarketClient(self.chain, self.deployment.model_market) if self.deployment.model_market else None


class MeasurementNotApproved(AttestationRejected):
    """Governance has not approved this checkout's enclave measurement for the role a service runs."""


def check_approved(registry: RegistryClient, role: Role, measurement: bytes) -> None:
    """Refuse ``measurement`` unless governance approved it for ``role`` (an enclave of it could not register).

    Raises:
        MeasurementNotApproved: it is not approved; the message names the role and the measurement.
    """
    if not registry.is_measurement_approved(role, measurement):
        name = role.name.lower().replace("_", "-")
        raise MeasurementNotApproved(
            f"governance has not approved the enclave measurement {measurement.hex()} for the {name} role in registry "
            f"{registry.address}: approve it for the {name} role (EnclaveRegistry.approveMeasurement) before starting the {name}"
        )


def service_account(role: str, key: str | None, key_file: Path | None, *, variable: str) -> LocalAccount:
    """A service's account from its hex key, given in the environment variable ``variable``
    (``key``) or in ``key_file``: never on a command line, which every user of the machine sees.

    Raises:
        ConfigError: neither or both are given, the file cannot be read, or it is not a key (the
            message says where it came from, never the key).
    """
    if key is not None and key_file is not None:
        raise ConfigError(f"give the {role} key either in {variable} or in a key file, not both")
    if key_file is not None:
        try:
            secret = key_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"cannot read the {role} key file {key_file}: {e.strerror}") from e
        if key_file.stat().st_mode & 0o077:
            logger.warning("the %s key file %s can be read by other users of this machine: chmod 600 it", role, key_file)
        where = str(key_file)
    elif key:
        secret, where = key.strip(), variable
    else:
        raise ConfigError(f"the {role} account's key is needed: set {variable}, or give --{role}-key-file")
    try:
        account: LocalAccount = Account.from_key(secret)
    except (ValueError, TypeError) as e:  # the message would quote the secret: say only where it came from
        raise ConfigError(f"{where} does not hold a private key in hex") from e
    return account


def write_dev_accounts(path: Path, accounts: tuple[LocalAccount, ...]) -> Path:
    """``accounts``' hex keys as a JSON list in ``path`` (mode 0600), for ``sterling gateway --dev-accounts-file``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump([account.key.hex() for account in accounts], out)
    return path


def read_dev_accounts(path: Path) -> tuple[LocalAccount, ...]:
    """The development accounts in ``path`` (:func:`write_dev_accounts`).

    Raises:
        ConfigError: unreadable, or not a JSON list of hex keys (the message never quotes a key).
    """
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(keys, list):
            raise TypeError("not a list")
        return tuple(Account.from_key(key) for key in keys)
    except OSError as e:
        raise ConfigError(f"cannot read the development accounts file {path}: {e.strerror}") from e
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path} is not a JSON list of development accounts' hex keys") from e


def log_json(verbose: bool) -> None:
    """One structured format for the standalone services: a JSON object per line on standard error."""

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": record.getMessage()}
            if record.exc_info:
                entry["error"] = self.formatException(record.exc_info)
            return json.dumps(entry)

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (the process's main thread only)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run_indexer(
    view: ChainView, database_url: str, *, confirmations: int, interval: float, stop: threading.Event, once: bool = False
) -> list[IndexedRange]:
    """Index the deployment's logs into ``database_url`` until ``stop`` (or one poll with ``once``).

    Returns:
        The ranges of the one poll with ``once``; otherwise nothing.

    Raises:
        IndexerChainMismatch: the database holds the index of another chain or deployment.
    """
    index = IndexDatabase(database_url)
    try:
        index.create_schema()
        indexer = Indexer(
            index, market=view.market, registry=view.registry, start_block=view.deployment.block,
            confirmations=confirmations, competitions=view.competitions(),
        )  # fmt: skip
        indexer.cursor()  # a database of another chain or deployment stops here, before anything is written
        if once:
            return indexer.poll_once()
        logger.info("indexing %s from block %d into %s", view.deployment.market, view.deployment.block, index.engine.url.render_as_string())
        indexer.run(stop, interval=interval)
        return []
    finally:
        index.close()


GRACEFUL_SHUTDOWN_SECONDS = 3
"""Seconds a stopping gateway waits for requests in flight (its event streams are ended first)."""


class GatewayServer(uvicorn.Server):
    """uvicorn's server, ending the gateway's event streams as soon as shutdown begins.

    Otherwise an open browser tab would hold the graceful shutdown until its timeout.
    """

    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)


def run_gateway(
    view: ChainView,
    database_url: str,
    blobs: Path,
    *,
    host: str,
    port: int,
    stop: threading.Event,
    key_manager_url: str | None = None,
    status_dir: Path | None = None,
    dev_accounts: tuple[LocalAccount, ...] = (),
    attestation_formats: Mapping[str, str] | None = None,
    inference_url: str | None = None,
    serve_models: InferenceSettings | None = None,
) -> None:
    """Serve the API and the UI from the index at ``database_url`` until ``stop``; another process indexes.

    Args:
        key_manager_url: a ``sterling keymanager`` service that providers' key deposits
            (``POST /api/deposits``) are forwarded to, and, when it serves them, models' and
            competitions' deposits, hand-overs, admissions and purchases (``None``: all refused).
        status_dir: the job status board the workers write (``--status-dir``): the live timeline.
        dev_accounts: development accounts the UI offers on a local chain (``sterling up``).
        attestation_formats: verifier address → the evidence format it checks, shown with the workers.
        inference_url: a ``sterling inference`` service ``POST /api/inference`` is relayed to
            (``None``: the route answers 404).
        serve_models: host an inference enclave in this process instead (``sterling inference``'s
            settings; its keys from its ``key_manager``): no hop between the gateway and the host,
            which on one machine roughly halves what a query costs (docs/operations.md).
    """
    from enclave_worker.remote import RemoteKeyManager
    from enclave_worker.remote_inference import InferenceHost, RemoteInference
    from sterling.gateway import GatewayServices, create_app, get_settings

    with ExitStack() as clients:
        index = IndexDatabase(database_url)
        clients.callback(index.close)
        key_manager = model_keys = competition_keys = None
        if key_manager_url:
            key_manager = clients.enter_context(RemoteKeyManager(key_manager_url))
            model_keys, competition_keys = _key_manager_sides(view, key_manager_url, clients)
        inference: InferenceHost | None = None
        if serve_models is not None:
            from sterling.inference_service import serving

            inference = clients.enter_context(serving(view, serve_models, stop=stop)).service
        elif inference_url:
            inference = clients.enter_context(RemoteInference(inference_url))
        services = GatewayServices(
            chain=view.chain, market=view.market, registry=view.registry, blobs=BlobStore(blobs), index=index,
            deployment_block=view.deployment.block, model_market=view.model_market(), competitions=view.competitions(),
            key_manager=key_manager, model_keys=model_keys, competition_keys=competition_keys,
            status=JobStatusBoard(status_dir) if status_dir is not None else None, dev_accounts=dev_accounts,
            attestation_formats=MappingProxyType(dict(attestation_formats or {})), inference=inference,
        )  # fmt: skip
        app = create_app(get_settings(host=host, port=port), services=services)
        server = GatewayServer(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS
            ),
            on_exit=app.state.feed.close,
        )

        def exit_on_stop() -> None:
            stop.wait()
            server.handle_exit(signal.SIGTERM, None)

        threading.Thread(target=exit_on_stop, name="sterling-gateway-stop", daemon=True).start()
        # As in ``sterling up``: what is built by now lives as long as the process; out of the
        # collector's sight, a full collection no longer walks it and stalls requests.
        gc.collect()
        gc.freeze()
        try:
            server.run()
        finally:
            app.state.feed.close()


def _key_manager_sides(
    view: ChainView, url: str, clients: ExitStack
) -> tuple[RemoteModelKeys | None, RemoteCompetitionKeys | None]:
    """The key manager's model and competition sides, each when the deployment has its market and the service serves it."""
    from enclave_worker.remote import NotServed
    from enclave_worker.remote_keys import RemoteCompetitionKeys, RemoteModelKeys

    sides: list[Any] = []
    for market, side in ((view.deployment.model_market, RemoteModelKeys), (view.deployment.competitions, RemoteCompetitionKeys)):
        if market is None:
            sides.append(None)
            continue
        try:
            sides.append(clients.enter_context(side(url)))
        except NotServed as e:
            logger.warning("%s: its routes answer 404", e)
            sides.append(None)
    return sides[0], sides[1]
