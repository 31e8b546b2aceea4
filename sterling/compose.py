"""Sterling's services as child processes, the way several machines would run them (issue 17).

Each service is its own ``sterling`` command — ``keymanager``, ``indexer``, ``gateway``,
``worker`` — started here as a child process that shares nothing with the others but what
separate machines would share: the chain's RPC URL, the deployment record, the database URL, the
key manager's and the gateway's URLs (and, in development, the simulated platform's key, which
real TEE hardware replaces). Secrets reach a child through key files (mode 0600), never its
command line. Used by ``sterling up`` on a node (its indexer and trainer workers), the
multi-process tests and ``make bench-scale``; docs/operations.md says how to run the same commands
on several machines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from enclave_worker.measurement import measure
from enclave_worker.sim_platform import SimPlatform
from enclave_worker.trusted.onchain import Role
from marketplace.chain import Chain, free_port
from marketplace.config import checkout_root
from marketplace.contracts import DEFAULT_CLAIM_LEASE, Deployment, RegistryClient, deploy
from marketplace.errors import SterlingError
from sterling.standalone import write_dev_accounts

STOP_TIMEOUT = 30.0
"""Seconds a service has to exit after SIGTERM before it is killed."""
DATABASE_URL_ENV = "STERLING_DATABASE_URL"
"""The database URL reaches ``sterling indexer`` and ``sterling gateway`` here (it may hold a password)."""
PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when the thread that started it ends."""


class ServiceNotHealthy(SterlingError):
    """A service exited or did not become healthy; the message ends with its log's tail."""


@dataclass
class Service:
    """One running ``sterling <command>`` child process."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str | None = None
    """Where it answers (the key manager, a gateway, a worker's health endpoint), if anywhere."""

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit status."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL: the machine's power cord (its enclave children are left to notice the closed pipe)."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def wait_healthy(self, path: str, *, timeout: float = 180.0) -> dict[str, Any]:
        """Poll ``GET <url><path>`` until it answers 200 and return its JSON.

        Raises:
            ServiceNotHealthy: the process exited first, or no 200 came within ``timeout`` seconds.
        """
        if self.url is None:
            raise ValueError(f"{self.name} has no URL to ask")
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while True:
                if not self.alive():
                    raise ServiceNotHealthy(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
                try:
                    answer = client.get(path)
                    if answer.status_code == 200:
                        body: dict[str, Any] = answer.json()
                        return body
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServiceNotHealthy(f"{self.name} was not healthy at {self.url}{path} within {timeout:.0f} s:\n{self.tail()}")
                time.sleep(0.25)


def rpc_url_of(chain: Chain) -> str | None:
    """The URL of ``chain``'s JSON-RPC node, or ``None`` for an in-process chain (nothing another process can reach)."""
    url = getattr(chain.w3.provider, "endpoint_uri", None)
    return str(url) if url else None


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child sent SIGTERM when the thread starting it ends, however it
    ends (SIGKILL included): Linux's ``PR_SET_PDEATHSIG``. ``None`` where libc has no ``prctl``.

    Start the children from the thread that outlives them (the main thread): the signal follows the
    thread, not the process.
    """
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec: async-signal-safe calls only
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the call: no signal would come
            os._exit(1)

    return arm


def write_key(path: Path, account: LocalAccount) -> Path:
    """``account``'s private key as hex in ``path`` (mode 0600), for a service's ``--…-key-file``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(account.key.hex())
    return path


@dataclass(frozen=True)
class Network:
    """What every service of one deployment shares: the node, the deployment record and (in
    development) the simulated platform's key."""

    rpc_url: str
    deployment: Deployment
    deployment_path: Path
    platform_key: Path

    def chain_args(self) -> list[str]:
        return ["--rpc-url", self.rpc_url, "--deployment", str(self.deployment_path)]


def prepare_network(
    chain: Chain,
    governance: LocalAccount,
    verifier: LocalAccount,
    folder: Path,
    *,
    claim_lease: int = DEFAULT_CLAIM_LEASE,
    payment_token: str | None = None,
) -> Network:
    """Deploy the contracts on ``chain`` and do governance's part: approve this checkout's enclave
    measurement for the trainer and key-manager roles and grant ``verifier`` the verifier role.

    Writes ``deployment.json`` and the simulated platform's key (``sim-platform.pem``) to ``folder``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    deployment = deploy(chain, governance, claim_lease=claim_lease, payment_token=payment_token)
    path = folder / "deployment.json"
    deployment.save(path)
    platform_key = folder / "sim-platform.pem"
    SimPlatform.load_or_create(platform_key)
    registry = RegistryClient(chain, deployment.registry)
    measurement = measure()
    for role in (Role.TRAINER, Role.KEY_MANAGER):
        registry.approve_measurement(governance, role, measurement)
    registry.add_verifier(governance, verifier.address)
    return Network(rpc_url=str(rpc_url_of(chain)), deployment=deployment, deployment_path=path, platform_key=platform_key)


class Composition:
    """Services started as child processes, stopped in reverse order when the block ends.

    Each service's log is ``<folder>/<name>.log``; a worker keeps its state in ``<folder>/<name>``.
    With ``tied``, a child gets SIGTERM when this process dies, even by SIGKILL (:func:`die_with_parent`).
    """

    def __init__(self, network: Network, folder: Path, *, tied: bool = False) -> None:
        self.network = network
        self.folder = folder
        self.services: list[Service] = []
        self._stack = ExitStack()
        self._preexec = die_with_parent() if tied else None
        self._key_managers: set[str] = set()

    def __enter__(self) -> Composition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every service, the last started first but the key managers after the rest (a worker
        stopping mid-job asks its key manager to give the claim back); again: nothing more happens."""
        key_managers = [s for s in self.services if s.name in self._key_managers]
        for service in [*reversed([s for s in self.services if s not in key_managers]), *reversed(key_managers)]:
            service.stop()
        self._stack.close()

    def spawn(self, name: str, args: list[str], *, url: str | None = None, env: dict[str, str] | None = None) -> Service:
        """``sterling <args>`` as a child process, its output in ``<folder>/<name>.log``; ``env`` over this process's environment."""
        log = self.folder / f"{name}.log"
        self.folder.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "sterling.cli", *args], cwd=checkout_root(), stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "200", **(env or {})}, preexec_fn=self._preexec,
            )  # fmt: skip
        service = Service(name, process, log, url)
        self.services.append(service)
        return service

    def service(self, name: str) -> Service:
        """The service started as ``name``.

        Raises:
            KeyError: none was.
        """
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(f"no service {name!r} was started here")

    def _enclave_service(
        self, command: str, name: str, operator: LocalAccount, key_manager: Service, blobs: Path | str, *,
        port_flag: str, threads: int | None, options: list[str], healthy: bool,
    ) -> Service:  # fmt: skip
        """``sterling <command>``, an enclave service of ``operator``: the chain, the key manager, the
        blobs, its state folder and key file, ``options``, a free port; with ``healthy``, once it answers ``/health``."""
        state, port = self.folder / name, free_port()
        args = [
            command, *self.network.chain_args(), "--key-manager", str(key_manager.url), "--blobs", str(blobs),
            "--state-dir", str(state), "--platform-key", str(self.network.platform_key),
            "--operator-key-file", str(write_key(state / "operator.key", operator)), port_flag, str(port), *options, "-v",
        ]  # fmt: skip
        if threads is not None:
            args += ["--threads", str(threads)]
        service = self.spawn(name, args, url=f"http://127.0.0.1:{port}")
        if healthy:
            service.wait_healthy("/health")
        return service

    def inference(
        self,
        operator: LocalAccount,
        key_manager: Service,
        blobs: Path | str,
        *,
        name: str = "inference",
        threads: int | None = 1,
        redeem_interval: float = 60.0,
        key_manager_wait: float = 0.0,
        healthy: bool = True,
    ) -> Service:
        """``sterling inference`` for ``operator``: an inference enclave serving the model market, its
        keys from ``key_manager``; with ``healthy``, once it answers ``/health``."""
        options = ["--redeem-interval", str(redeem_interval), "--wait-key-manager", str(key_manager_wait)]
        return self._enclave_service(
            "inference", name, operator, key_manager, blobs, port_flag="--port", threads=threads, options=options, healthy=healthy
        )

    def evaluator(
        self,
        operator: LocalAccount,
        key_manager: Service,
        blobs: Path | str,
        *,
        name: str = "evaluator",
        threads: int | None = 1,
        interval: float = 2.0,
        key_manager_wait: float = 0.0,
        healthy: bool = True,
    ) -> Service:
        """``sterling evaluator`` for ``operator``: an evaluator enclave scoring the competition
        market, its keys from ``key_manager``; with ``healthy``, once it answers ``/health``."""
        options = ["--interval", str(interval), "--wait-key-manager", str(key_manager_wait)]
        return self._enclave_service(
            "evaluator", name, operator, key_manager, blobs, port_flag="--health-port", threads=threads, options=options, healthy=healthy
        )

    def keymanager(
        self,
        operator: LocalAccount,
        verifier: LocalAccount,
        *,
        confirmations: int = 0,
        name: str = "keymanager",
        state: Path | None = None,
        blobs: Path | None = None,
        port: int | None = None,
        healthy: bool = True,
    ) -> Service:
        """``sterling keymanager`` (the key manager and the verifier; its model and competition sides
        when the deployment has those markets); with ``healthy``, once it answers ``/health``.

        ``state``: its state folder (default ``<folder>/<name>``; ``sterling up`` gives its own, where
        the sealed deposits of earlier runs are); ``blobs``: the blob folder it reads models and test
        sets from; ``port``: where it listens (default: a free port).
        """
        keys, port = self.folder / name, port or free_port()
        args = [
            "keymanager", *self.network.chain_args(), "--state-dir", str(state or keys), "--port", str(port),
            "--platform-key", str(self.network.platform_key), "--confirmations", str(confirmations),
            "--operator-key-file", str(write_key(keys / "operator.key", operator)),
            "--verifier-key-file", str(write_key(keys / "verifier.key", verifier)), "-v",
        ]  # fmt: skip
        if blobs is not None:
            args += ["--blobs", str(blobs)]
        service = self.spawn(name, args, url=f"http://127.0.0.1:{port}")
        self._key_managers.add(name)
        if healthy:
            service.wait_healthy("/health")
        return service

    def indexer(self, database_url: str, *, interval: float = 0.2, confirmations: int = 0, name: str = "indexer") -> Service:
        """``sterling indexer`` into ``database_url`` (it has no health endpoint: its log says what it indexed).

        The URL, which may hold a password, goes in the child's environment, not on its command line.
        """
        args = ["indexer", *self.network.chain_args(), "--interval", str(interval), "--confirmations", str(confirmations), "-v"]
        return self.spawn(name, args, env={DATABASE_URL_ENV: database_url})

    def gateway(
        self,
        database_url: str,
        blobs: Path,
        *,
        key_manager: Service | None = None,
        inference: Service | None = None,
        status: Path | None = None,
        dev_accounts: tuple[LocalAccount, ...] = (),
        attestation_formats: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        models_operator: LocalAccount | None = None,
        models_threads: int | None = 1,
        redeem_interval: float = 30.0,
        name: str = "gateway",
        healthy: bool = True,
    ) -> Service:
        """``sterling gateway`` reading ``database_url`` and serving ``blobs``; with ``healthy``, once it answers.

        ``key_manager``, ``inference``: the services it relays to; ``status``: the workers' job
        status board; ``dev_accounts``: offered to the UI on a local chain (in a key file, mode
        0600); ``attestation_formats``: verifier → evidence format; ``settings``: more
        ``STERLING_GATEWAY_*`` variables (its limits, as ``sterling up`` was configured);
        ``models_operator``: host an inference enclave for this operator in the gateway's process
        (``--serve-models``, with ``models_threads`` torch threads, redeeming every ``redeem_interval`` s).
        """
        port = port or free_port()
        blobs.mkdir(parents=True, exist_ok=True)
        args = ["gateway", *self.network.chain_args(), "--blobs", str(blobs), "--host", host, "--port", str(port)]
        env = {**(settings or {})}
        if key_manager is not None and key_manager.url is not None:
            args += ["--key-manager", key_manager.url]
        if inference is not None and inference.url is not None:
            args += ["--inference", inference.url]
        if models_operator is not None:
            args.append("--serve-models")
            models = self.folder / name / "inference"
            env |= {
                "STERLING_INFERENCE_PLATFORM_KEY": str(self.network.platform_key), "STERLING_INFERENCE_STATE_DIR": str(models),
                "STERLING_INFERENCE_OPERATOR_KEY_FILE": str(write_key(models / "operator.key", models_operator)),
                "STERLING_INFERENCE_REDEEM_INTERVAL": str(redeem_interval),
                **({"STERLING_INFERENCE_THREADS": str(models_threads)} if models_threads is not None else {}),
            }  # fmt: skip
        if status is not None:
            args += ["--status-dir", str(status)]
        if dev_accounts:
            args += ["--dev-accounts-file", str(write_dev_accounts(self.folder / name / "dev-accounts.json", dev_accounts))]
        for verifier, evidence in (attestation_formats or {}).items():
            args += ["--attestation-format", f"{verifier}={evidence}"]
        url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        service = self.spawn(name, args, url=f"http://{url_host}:{port}", env={**env, DATABASE_URL_ENV: database_url})
        if healthy:
            service.wait_healthy("/api/health")
        return service

    def worker(
        self,
        operator: LocalAccount,
        key_manager: Service | str,
        blobs: str,
        *,
        name: str,
        threads: int = 1,
        interval: float = 0.2,
        stake: float | None = None,
        niceness: int = 0,
        status: Path | None = None,
        key_manager_wait: float = 0.0,
        healthy: bool = True,
    ) -> Service:
        """``sterling worker`` for ``operator`` using ``key_manager`` (the service, or its URL); with
        ``healthy``, once its enclave is registered and it polls (else see :func:`wait_polling`).

        ``status``: the job status board it writes (default: its state folder's ``status``);
        ``key_manager_wait``: seconds it keeps asking a key manager that does not answer yet.
        """
        state, port = self.folder / name, free_port()
        km_url = key_manager if isinstance(key_manager, str) else str(key_manager.url)
        args = [
            "worker", *self.network.chain_args(), "--key-manager", km_url, "--blobs", blobs,
            "--state-dir", str(state), "--platform-key", str(self.network.platform_key),
            "--operator-key-file", str(write_key(state / "operator.key", operator)),
            "--threads", str(threads), "--niceness", str(niceness), "--interval", str(interval), "--health-port", str(port), "-v",
        ]  # fmt: skip
        if stake is not None:
            args += ["--stake", str(stake)]
        if status is not None:
            args += ["--status-dir", str(status)]
        if key_manager_wait:
            args += ["--wait-key-manager", str(key_manager_wait)]
        service = self.spawn(name, args, url=f"http://127.0.0.1:{port}")
        if healthy:
            wait_polling(service)
        return service


def wait_polling(service: Service, *, timeout: float = 180.0) -> dict[str, Any]:
    """Wait until a ``sterling worker``'s enclave is registered and it polls the chain; its health report.

    Raises:
        ServiceNotHealthy: it exited meanwhile, or did not poll within ``timeout`` seconds.
    """

    def polling() -> dict[str, Any] | None:
        try:
            answer = httpx.get(f"{service.url}/health", timeout=5)
        except httpx.TransportError:
            return None
        report: dict[str, Any] = answer.json() if answer.status_code == 200 else {}
        return report if report.get("last_poll_age_s") is not None else None

    found: dict[str, Any] = wait_until(polling, what=f"{service.name} polls the chain", timeout=timeout, service=service)
    return found


def wait_until(check: Callable[[], Any], *, what: str, timeout: float, service: Service | None = None, every: float = 0.1) -> Any:
    """Call ``check`` until it returns something true, and return that.

    Raises:
        ServiceNotHealthy: ``service`` exited meanwhile, or ``timeout`` seconds passed (the message says ``what``).
    """
    deadline = time.monotonic() + timeout
    while True:
        if service is not None and not service.alive():
            status = service.process.returncode
            raise ServiceNotHealthy(f"{service.name} exited with {status} while waiting until {what}:\n{service.tail()}")
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = f":\n{service.tail()}" if service is not None else ""
            raise ServiceNotHealthy(f"not within {timeout:.0f} s: {what}{tail}")
        time.sleep(every)
