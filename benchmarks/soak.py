"""Soak: hold many event streams and slow uploads open while reads go on, then check nothing leaked.

``make soak`` (``python -m benchmarks.soak``):

1. starts ``sterling up`` in a child process (:func:`sterling.up.spawned`, anvil by default) on a
   fresh state directory, with a 5 s body timeout and an upload cap that admits the load (the
   defaults allow 32 uploads at once, the soak holds 100); every other bound keeps its default;
2. records the child's open file descriptors and the blob store's staging files (the baseline);
3. for ``--seconds``: holds ``--streams`` ``GET /api/events`` streams and ``--uploads`` slow
   uploads (real ciphertext, a piece every quarter second; in turn completed, abandoned
   half-way, or stalled half-way until the gateway answers 408), spread over 50 loopback source
   addresses (127.0.1.x, so each is a client of its own within the per-client caps), while an
   open-loop reader sends ``--rate`` reads per second over keep-alive connections, in turn
   ``/api/health``, ``/api/datasets``, ``/api/jobs`` and ``/api/config`` (latency from each
   read's due time, so queueing is not hidden; the health reads give the p99);
4. closes everything, waits for the gateway to let go, and counts again: the child's open file
   descriptors, the TCP connections it holds on its port, and the staging files.

The reads run in the soak's own process (raw HTTP/1.1 on asyncio, far cheaper than an HTTP
client library on a 2-core machine); a warm-up burst before the baseline lets the gateway's
thread pool (and each thread's pooled connection to the chain node) reach its working size.

The last line reads ``soak: health p99 X ms, errors N, open fds F, staging files S``; the goals
are p99 ≤ 100 ms, no errors, and descriptors and staging files back at their baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.loadgen import LoadResult, paced
from enclave_worker.trusted import dataformat
from sterling.up import spawned

SOURCES = tuple(f"127.0.1.{i}" for i in range(1, 51))
"""Loopback source addresses the soak's clients connect from (the gateway counts each as one client)."""
BODY_TIMEOUT_SECONDS = 5
UPLOAD_PAYLOAD_BYTES = 64 * 1024
UPLOAD_PIECE_BYTES = 2048
UPLOAD_PIECE_SECONDS = 0.25
UPLOAD_STAGGER_SECONDS = 8.0
SETTLE_SECONDS = 20.0
FD_SLACK = 2
"""Descriptors the child may hold above its baseline afterwards (a pooled database connection, a log file)."""
HEALTH_P99_GOAL_MS = 100.0
READ_PATHS = ("/api/health", "/api/datasets", "/api/jobs", "/api/datasets?sort=price")
READ_CONNECTIONS = 32
READ_TIMEOUT_SECONDS = 10.0
WARMUP_SECONDS = 3.0
QUIET_TIMEOUT_SECONDS = 90.0
QUIET_CPU_SHARE = 0.2


@dataclass
class SoakResult:
    """What one soak run measured."""

    health: LoadResult
    errors: list[str] = field(default_factory=list)
    baseline_fds: int = 0
    open_fds: int = 0
    baseline_staging: int = 0
    staging_files: int = 0
    baseline_connections: int = 0
    connections: int = 0
    reads: int = 0
    outbound_growth: int = 0
    """Sockets to other services (the chain node) above the baseline: the HTTP pools of new worker threads."""
    streams_opened: int = 0
    other_reads: LoadResult | None = None
    """Latencies of the reads other than /api/health (index queries served from the threadpool)."""
    uploads: dict[str, int] = field(default_factory=lambda: {"completed": 0, "abandoned": 0, "timed out": 0})

    @property
    def health_p99_ms(self) -> float:
        return self.health.percentile(99)

    @property
    def error_count(self) -> int:
        return len(self.errors) + self.health.errors

    @property
    def goals_met(self) -> bool:
        return (
            self.health_p99_ms <= HEALTH_P99_GOAL_MS
            and self.error_count == 0
            and self.open_fds - self.outbound_growth <= self.baseline_fds + FD_SLACK
            and self.connections <= self.baseline_connections
            and self.staging_files <= self.baseline_staging
        )

    def line(self) -> str:
        return (
            f"soak: health p99 {self.health_p99_ms:.1f} ms, errors {self.error_count}, open fds {self.open_fds} "
            f"(baseline {self.baseline_fds}, {self.outbound_growth} more pooled to the chain node), staging files {self.staging_files}"
        )


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _fd_kinds(pid: int) -> Counter[str]:
    """The process's descriptors by kind (``socket``, ``pipe``, ``anon_inode``) or file path."""
    kinds: Counter[str] = Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        kinds[target.split(":", 1)[0] if target.startswith(("socket:", "pipe:", "anon_inode:")) else target] += 1
    return kinds


def _sockets(pid: int, port: int) -> Counter[str]:
    """The process's TCP sockets by role: ``listening``, ``client of :<port>`` (accepted), ``to :<remote port>``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    roles: Counter[str] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                cols = row.split()
                if cols[9] not in inodes:
                    continue
                local, remote = int(cols[1].rsplit(":", 1)[1], 16), int(cols[2].rsplit(":", 1)[1], 16)
                if cols[3] == "0A":  # LISTEN
                    roles["listening"] += 1
                elif local == port:
                    roles[f"client of :{port}"] += 1
                else:
                    roles[f"tcp to :{remote}"] += 1
    return roles


def _connections(pid: int, port: int) -> int:
    """TCP connections the process holds on its listening ``port`` (accepted clients, not the listener)."""
    return _sockets(pid, port)[f"client of :{port}"]


def _staging(state_dir: Path) -> int:
    tmp = state_dir / "blobs" / "tmp"
    return sum(1 for _ in tmp.iterdir()) if tmp.is_dir() else 0


async def _status(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1])


async def _connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()


async def _hold_stream(port: int, source: str, result: SoakResult) -> None:
    """Keep one event stream open, reading everything; reconnect if the gateway ends it (its lifetime)."""
    request = f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
    while True:
        reader, writer = await _connect(port, source)
        try:
            writer.write(request)
            status = await _status(reader)
            if status != 200:
                result.errors.append(f"event stream from {source}: {status}")
                await asyncio.sleep(1)
                continue
            result.streams_opened += 1
            while await reader.read(65536):
                pass
        finally:
            _close(writer)


async def _slow_uploads(port: int, source: str, turn: int, result: SoakResult) -> None:
    """Upload ciphertext slowly, again and again: completed, abandoned half-way, stalled half-way, in turn."""
    key = dataformat.new_data_key()
    await asyncio.sleep(random.uniform(0, UPLOAD_STAGGER_SECONDS))  # clients are not in step
    while True:
        outcome = ("completed", "abandoned", "timed out")[turn % 3]
        turn += 1
        body = dataformat.encrypt_bytes(
            os.urandom(UPLOAD_PAYLOAD_BYTES), key, kind=dataformat.Kind.DATASET, context=os.urandom(32), chunk_size=4096
        )
        pieces = [body[i : i + UPLOAD_PIECE_BYTES] for i in range(0, len(body), UPLOAD_PIECE_BYTES)]
        sent = pieces if outcome == "completed" else pieces[: len(pieces) // 2]
        reader, writer = await _connect(port, source)
        try:
            writer.write(
                f"POST /api/blobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            for piece in sent:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(UPLOAD_PIECE_SECONDS)
            if outcome == "abandoned":
                result.uploads[outcome] += 1
                continue
            expected = 201 if outcome == "completed" else 408
            status = await asyncio.wait_for(_status(reader), BODY_TIMEOUT_SECONDS + 30)
            if status == expected:
                result.uploads[outcome] += 1
            else:
                result.errors.append(f"upload from {source} ({outcome}): {status}, expected {expected}")
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
            result.errors.append(f"upload from {source} ({outcome}): {type(e).__name__}")
        finally:
            _close(writer)


class _Reader:
    """Open-loop GETs over a pool of keep-alive connections; latency counts from each read's due time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.errors: list[str] = []
        self.read_latencies_ms: list[float] = []

    async def get(self, path: str) -> None:
        """One GET; raises on anything but a 200.

        A pooled connection the server closed meanwhile (its keep-alive timeout) is replaced once.
        """
        for reused in (bool(self.idle), False):
            reader, writer = self.idle.pop() if reused else await asyncio.open_connection("127.0.0.1", self.port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                writer.close()
                if reused and not getattr(e, "partial", b""):
                    continue
                raise
            except BaseException:
                writer.close()
                raise
            break
        try:
            status = int(head.split(b" ", 2)[1])
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:")), 0)
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if status != 200:
            writer.close()
            raise RuntimeError(f"GET {path}: {status}")
        self.idle.append((reader, writer))

    async def run(self, *, rate: float, seconds: float) -> tuple[list[float], int]:
        """Reads at ``rate`` per second for ``seconds``; returns the health reads' latencies (ms) and the reads sent
        (the other reads' latencies go to :attr:`read_latencies_ms`)."""
        health: list[float] = []
        total = int(rate * seconds)

        async def one(i: int, due: float) -> None:
            path = READ_PATHS[i % len(READ_PATHS)]
            try:
                await asyncio.wait_for(self.get(path), READ_TIMEOUT_SECONDS)
            except Exception as e:
                self.errors.append(f"read {path}: {type(e).__name__}: {e}")
                return
            latency = (time.perf_counter() - due) * 1000
            (health if path == "/api/health" else self.read_latencies_ms).append(latency)

        await paced(total, rate, one)
        return health, total

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _warm_up(port: int, *, rate: float) -> None:
    reader = _Reader(port)
    try:
        await reader.run(rate=rate, seconds=WARMUP_SECONDS)
    finally:
        reader.close()


async def _load(port: int, *, seconds: float, streams: int, uploads: int, rate: float, result: SoakResult) -> LoadResult:
    tasks = [asyncio.create_task(_hold_stream(port, SOURCES[i % len(SOURCES)], result)) for i in range(streams)]
    tasks += [asyncio.create_task(_slow_uploads(port, SOURCES[i % len(SOURCES)], i, result)) for i in range(uploads)]
    await asyncio.sleep(2.0)  # the streams and uploads are open before the reads begin
    reader = _Reader(port)
    try:
        started = time.perf_counter()
        latencies, result.reads = await reader.run(rate=rate, seconds=seconds)
        health = LoadResult(requests=len(latencies), errors=0, duration_s=time.perf_counter() - started, latencies_ms=tuple(latencies))
        result.errors += reader.errors
        result.other_reads = LoadResult(
            requests=len(reader.read_latencies_ms), errors=0, duration_s=health.duration_s, latencies_ms=tuple(reader.read_latencies_ms)
        )
    finally:
        reader.close()
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            result.errors.append(f"client task failed: {type(outcome).__name__}: {outcome}")
    return health


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, s) of the process and its children (the enclaves start after the gateway)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with suppress(FileNotFoundError):
            pids += [int(p) for p in task.read_text().split()]
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _wait_quiet(pid: int, *, timeout: float = QUIET_TIMEOUT_SECONDS) -> float:
    """Wait until ``sterling up`` and its enclaves use under a fifth of a core (start-up done); returns the seconds waited."""
    started = time.monotonic()
    before = _tree_cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(1.0)
        now = _tree_cpu_seconds(pid)
        if now - before < QUIET_CPU_SHARE:
            break
        before = now
    return time.monotonic() - started


def _settle(measure: Callable[[], int], target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    value = measure()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.25)
        value = measure()
    return value


def run(
    *, seconds: float, streams: int, uploads: int, rate: float, chain: str = "anvil", work_dir: Path, say: Callable[[str], None] = print
) -> SoakResult:
    """One soak against a fresh ``sterling up`` in ``work_dir``; ``say`` gets the progress and summary lines."""
    limits = {
        "STERLING_UPLOADS_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
        "STERLING_UPLOADS_MAX_CONCURRENT": str(max(32, uploads + 16)),
    }
    state_dir = work_dir / "state"
    with _environment(limits), spawned(state_dir, log=work_dir / "up.log", chain=chain) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        waited = _wait_quiet(process.pid)
        with httpx.Client(base_url=url, timeout=10) as client:
            client.get("/api/health").raise_for_status()
        asyncio.run(_warm_up(port, rate=rate))
        time.sleep(2.0)
        result = SoakResult(health=LoadResult(0, 0, 0.0, ()))
        result.baseline_fds, result.baseline_staging = _fds(process.pid), _staging(state_dir)
        baseline_kinds = _fd_kinds(process.pid) + _sockets(process.pid, port)
        result.baseline_connections = _connections(process.pid, port)
        say(
            f"soak: {streams} event streams, {uploads} slow uploads, {rate:g} reads/s for {seconds:g} s "
            f"(baseline: {result.baseline_fds} open fds, {result.baseline_connections} connections, "
            f"{result.baseline_staging} staging files; start-up settled after {waited:.0f} s)"
        )
        result.health = asyncio.run(_load(port, seconds=seconds, streams=streams, uploads=uploads, rate=rate, result=result))
        result.open_fds = _settle(lambda: _fds(process.pid), result.baseline_fds + FD_SLACK, SETTLE_SECONDS)
        result.connections = _settle(lambda: _connections(process.pid, port), result.baseline_connections, SETTLE_SECONDS)
        result.staging_files = _settle(lambda: _staging(state_dir), result.baseline_staging, SETTLE_SECONDS)
        grown = (_fd_kinds(process.pid) + _sockets(process.pid, port)) - baseline_kinds
        result.outbound_growth = sum(n for kind, n in grown.items() if kind.startswith("tcp to :"))
    say(
        f"soak: {result.streams_opened} streams opened; uploads {result.uploads['completed']} completed, "
        f"{result.uploads['abandoned']} abandoned, {result.uploads['timed out']} timed out (408); {result.reads} reads, "
        f"health p50 {result.health.median_ms:.1f} ms over {len(result.health.latencies_ms)}; fds {result.baseline_fds} -> "
        f"{result.open_fds}, connections {result.baseline_connections} -> {result.connections}"
    )
    if result.other_reads is not None and result.other_reads.latencies_ms:
        say(
            f"soak: other reads p50 {result.other_reads.median_ms:.1f} ms, p99 {result.other_reads.percentile(99):.1f} ms "
            f"over {len(result.other_reads.latencies_ms)}"
        )
    if grown:
        say(f"soak: descriptors above the baseline: {', '.join(f'{n} {kind}' for kind, n in grown.most_common())}")
    for error in result.errors[:10]:
        say(f"soak: error: {error}")
    say(result.line())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts")
    parser.add_argument("--streams", type=int, default=200, help="event streams held open")
    parser.add_argument("--uploads", type=int, default=100, help="slow uploads in progress at any time")
    parser.add_argument("--rate", type=float, default=200.0, help="reads per second (a quarter of them /api/health)")
    parser.add_argument("--chain", choices=("anvil", "embedded"), default="anvil", help="the chain sterling up runs")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the log and state here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sterling-soak-") as tmp:
        work_dir = args.work_dir or Path(tmp)
        work_dir.mkdir(parents=True, exist_ok=True)
        result = run(seconds=args.seconds, streams=args.streams, uploads=args.uploads, rate=args.rate, chain=args.chain, work_dir=work_dir)
    return 0 if result.goals_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
