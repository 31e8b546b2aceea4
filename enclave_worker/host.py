"""The untrusted host's handle on one trusted process: start it, send requests, read replies."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .trusted import protocol
from .trusted.errors import ProtocolError, SterlingError
from .trusted.onchain import Role

logger = logging.getLogger(__name__)

CODE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding the ``enclave_worker`` package (a checkout, or site-packages when installed)."""
ProgressFn = Callable[[dict[str, Any]], None]


class EnclaveRequestFailed(SterlingError):
    """The trusted process answered a request with an error."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error
        self.message = message


class EnclaveProcess:
    """A running trusted process (``python -m enclave_worker.trusted.main``) and its pipes.

    Example:
        >>> with EnclaveProcess.start(Role.TRAINER) as enclave:  # doctest: +SKIP
        ...     enclave.request("hello")["signer"]
    """

    def __init__(self, process: subprocess.Popen[bytes], role: Role) -> None:
        self._process = process
        self._lock = threading.Lock()
        self.role = role
        hello = self.request("hello")
        self.signer: bytes = hello["signer"]
        self.encryption_key: bytes = hello["encryption_key"]

    @classmethod
    def start(
        cls,
        role: Role,
        *,
        code_root: Path = CODE_ROOT,
        seal_key: bytes | None = None,
        threads: int | None = None,
        niceness: int = 0,
    ) -> EnclaveProcess:
        """Launch a trusted process of ``role`` from the code under ``code_root``.

        Args:
            code_root: the directory holding the ``enclave_worker`` package to run.
            seal_key: the platform's sealing key for this code, passed through a private pipe.
            threads: compute threads for training or inference (default: torch's, one per core); also
                the child's OpenMP and BLAS thread counts.
            niceness: added to the process's scheduling niceness, so that services sharing the
                machine (the gateway of ``sterling up``) stay responsive while it trains.
        """
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        args = [sys.executable, "-m", "enclave_worker.trusted.main", "--role", role.name.lower()]
        env = None
        if threads is not None:
            args += ["--threads", str(threads)]
            # OpenMP and BLAS pools sized by the caller's environment (an OMP_NUM_THREADS=8 shell)
            # would run beside torch's and spin on the cores the host needs (measured: one inference
            # enclave with OMP_NUM_THREADS=2 halved 32 clients' throughput).
            env = {**os.environ, **dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), str(threads))}
        pass_fds: tuple[int, ...] = ()
        read_end = None
        if seal_key is not None:
            read_end, write_end = os.pipe()
            os.write(write_end, seal_key)
            os.close(write_end)
            pass_fds = (read_end,)
            args += ["--seal-fd", str(read_end)]
        try:
            # Own session: a terminal's Ctrl-C reaches the host, which closes the enclave itself
            # (stdin EOF ends the trusted process, also if the host dies).
            process = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=code_root, pass_fds=pass_fds, start_new_session=True, env=env
            )
        finally:
            if read_end is not None:
                os.close(read_end)
        if niceness:
            os.setpriority(os.PRIO_PROCESS, process.pid, os.getpriority(os.PRIO_PROCESS, process.pid) + niceness)
        logger.info("started %s enclave process pid %d", role.name.lower(), process.pid)
        return cls(process, role)

    def request(self, op: str, *, progress: ProgressFn | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its result, passing progress frames to ``progress``.

        Raises:
            EnclaveRequestFailed: the enclave refused or failed the request.
            ProtocolError: the process died or answered out of protocol.
        """
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            try:
                protocol.write_frame(self._process.stdin, {"v": protocol.PROTOCOL_VERSION, "op": op, **fields})
            except BrokenPipeError as e:
                raise ProtocolError(f"{self.role.name.lower()} enclave process has exited") from e
            while True:
                reply = protocol.read_frame(self._process.stdout)
                if reply is None:
                    raise ProtocolError(f"{self.role.name.lower()} enclave process closed its output")
                if not isinstance(reply, dict) or "type" not in reply:
                    raise ProtocolError("enclave reply is not a typed map")
                kind = reply.pop("type")
                reply.pop("v", None)
                if kind == "progress":
                    if progress is not None:
                        progress(reply)
                    continue
                if kind == "error":
                    raise EnclaveRequestFailed(str(reply.get("error")), str(reply.get("message")))
                if kind == "result":
                    return reply
                raise ProtocolError(f"unknown enclave reply type {kind!r}")

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self) -> None:
        """Close the pipes and wait for the process to exit."""
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> EnclaveProcess:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
