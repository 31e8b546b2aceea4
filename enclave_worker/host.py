"""The untrusted host's handle on one trusted process: start it, send requests, read replies.

A trainer's ``run`` reads its datasets' ciphertexts from the host while it runs: the host keeps
each ciphertext (:class:`CiphertextSource`: bytes, or a file such as a blob-store entry) and
answers every ``read`` frame the enclave sends with the bytes asked for (``docs/enclave-protocol.md``).
"""

from __future__ import annotations

import logging
import os

try:
    import fcntl
except ImportError:  # not on POSIX
    fcntl = None  # type: ignore[assignment]
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

from .trusted import dataformat, protocol
from .trusted.errors import ProtocolError, SterlingError
from .trusted.onchain import Role

logger = logging.getLogger(__name__)

CODE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding the ``enclave_worker`` package (a checkout, or site-packages when installed)."""
ProgressFn = Callable[[dict[str, Any]], None]
ReadFn = Callable[[int, int, int], bytes]
"""Serves an enclave's ``read``: ``(dataset index, offset, length)`` -> the bytes."""


@runtime_checkable
class CiphertextSource(Protocol):
    """A ciphertext the host keeps and serves to the enclave by byte range."""

    @property
    def size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


class BytesSource:
    """A ciphertext held in the host's memory."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def size(self) -> int:
        return len(self._data)

    def read(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]


class FileSource:
    """A ciphertext in a file (a blob-store entry), read with ``pread``: the host holds one read's
    bytes at a time, whatever the file's size. Close it (or use it as a context manager) when done."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def read(self, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        while length > 0:
            part = os.pread(self._fd, length, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


PIPE_BYTES = 1 << 20
"""The enclave's input pipe is widened to this (Linux's default limit) where the OS allows: a
trainer reads its datasets through it, and 64 KiB at a time costs ~4x the time per GiB."""


def _widen_pipe(pipe: Any) -> None:
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if pipe is None or set_size is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), set_size, PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size for this user: keep the default
        logger.debug("could not widen the enclave's pipe to %d bytes", PIPE_BYTES)


def _hosted_datasets(op: str, fields: dict[str, Any]) -> tuple[dict[str, Any], ReadFn | None]:
    """A ``run``'s or ``plan``'s dataset items with their ``ciphertext`` (bytes or a
    :class:`CiphertextSource`) kept on the host: the enclave gets each one's ``size`` (a ``plan``
    also its 52-byte ``header``), and the returned function serves its reads."""
    items = fields.get("datasets")
    if op not in ("run", "plan") or not isinstance(items, list) or not any(isinstance(i, dict) and "ciphertext" in i for i in items):
        return fields, None
    sources: list[CiphertextSource | None] = []
    sent: list[Any] = []
    for item in items:
        if not isinstance(item, dict) or "ciphertext" not in item:
            sources.append(None)
            sent.append(item)
            continue
        held = item["ciphertext"]
        source: CiphertextSource = held if isinstance(held, CiphertextSource) else BytesSource(bytes(held))
        rest = {k: v for k, v in item.items() if k != "ciphertext"} | {"size": source.size}
        if op == "plan":
            rest["header"] = source.read(0, dataformat.HEADER_LEN)
        sources.append(source)
        sent.append(rest)

    def read(dataset: int, offset: int, length: int) -> bytes:
        source = sources[dataset] if 0 <= dataset < len(sources) else None
        if source is None or offset < 0 or length < 0:
            return b""
        return source.read(offset, length)

    return {**fields, "datasets": sent}, read


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
        memory_budget_mib: int | None = None,
    ) -> EnclaveProcess:
        """Launch a trusted process of ``role`` from the code under ``code_root``.

        Args:
            code_root: the directory holding the ``enclave_worker`` package to run.
            seal_key: the platform's sealing key for this code, passed through a private pipe.
            threads: compute threads for training or inference (default: torch's, one per core); also
                the child's OpenMP and BLAS thread counts.
            niceness: added to the process's scheduling niceness, so that services sharing the
                machine (the gateway of ``sterling up``) stay responsive while it trains.
            memory_budget_mib: the memory a trainer plans each job within (the trusted default
                otherwise, 2 GiB): the enclave's memory size on a real platform.
        """
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        args = [sys.executable, "-m", "enclave_worker.trusted.main", "--role", role.name.lower()]
        env = None
        if memory_budget_mib is not None:
            args += ["--memory-budget-mib", str(memory_budget_mib)]
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
        _widen_pipe(process.stdin)
        logger.info("started %s enclave process pid %d", role.name.lower(), process.pid)
        return cls(process, role)

    def request(self, op: str, *, progress: ProgressFn | None = None, read: ReadFn | None = None, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its result, passing progress frames to ``progress`` and
        answering the enclave's ``read`` frames with ``read``.

        A ``run`` (or ``plan``) whose dataset items carry a ``ciphertext`` (bytes or a
        :class:`CiphertextSource`) keeps it here: the enclave is told its size and reads it on demand.

        Raises:
            EnclaveRequestFailed: the enclave refused or failed the request.
            ProtocolError: the process died or answered out of protocol.
        """
        assert self._process.stdin is not None and self._process.stdout is not None
        fields, hosted = _hosted_datasets(op, fields)
        read = read or hosted
        with self._lock:
            try:
                protocol.write_frame(self._process.stdin, {"v": protocol.PROTOCOL_VERSION, "op": op, **fields})
            except BrokenPipeError as e:
                raise ProtocolError(f"{self.role.name.lower()} enclave process has exited") from e
            failure: BaseException | None = None  # a read the host could not serve; raised once the enclave answers
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
                if kind == "read":
                    data = b""
                    if read is not None and failure is None:
                        try:
                            data = read(int(reply.get("dataset", -1)), int(reply.get("offset", -1)), int(reply.get("length", 0)))
                        except Exception as e:  # noqa: BLE001 - the enclave must still get an answer, or the stream stalls
                            failure = e
                    self._answer_read(data)
                    continue
                if kind == "error":
                    error = EnclaveRequestFailed(str(reply.get("error")), str(reply.get("message")))
                    if failure is not None:
                        raise failure from error
                    raise error
                if kind == "result":
                    return reply
                raise ProtocolError(f"unknown enclave reply type {kind!r}")

    def _answer_read(self, data: bytes) -> None:
        """The ``data`` frame, then the bytes themselves, raw (``protocol.READ_REPLY``)."""
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(protocol.encode_frame({"v": protocol.PROTOCOL_VERSION, "op": "data", "length": len(data)}))
            stdin.write(data)
            stdin.flush()
        except BrokenPipeError as e:
            raise ProtocolError(f"{self.role.name.lower()} enclave process has exited") from e

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
