"""The open-loop load generator counts, times and fails requests as it says."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.loadgen import LoadResult, open_loop


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.startswith("/slow"):
            time.sleep(0.05)
        status = 500 if self.path.startswith("/fail") else 200
        body = b"{}"
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_requests_leave_on_schedule_and_are_timed(server: str) -> None:
    started = time.perf_counter()
    result = open_loop(f"{server}/ok", rate=100, duration=1.0)
    assert result.requests == 100 and result.errors == 0 and len(result.latencies_ms) == 100
    assert time.perf_counter() - started >= 0.95  # the schedule spans the duration
    assert 0 < result.percentile(50) <= result.percentile(99)


def test_slow_answers_show_in_the_latency(server: str) -> None:
    result = open_loop(f"{server}/slow", rate=20, duration=0.5)
    assert result.errors == 0 and result.percentile(50) >= 50


def test_errors_are_counted_not_timed(server: str) -> None:
    result = open_loop(f"{server}/fail", rate=20, duration=0.5)
    assert result.errors == 10 and result.latencies_ms == ()
    assert result.achieved_rps == 0


def test_refused_connections_are_errors() -> None:
    result = open_loop("http://127.0.0.1:9/none", rate=10, duration=0.3, timeout=1.0)
    assert result.errors == 3


def test_percentiles_use_nearest_rank() -> None:
    result = LoadResult(requests=100, errors=0, duration_s=1.0, latencies_ms=tuple(float(i) for i in range(1, 101)))
    assert result.percentile(50) == 50.0 and result.percentile(99) == 99.0 and result.percentile(100) == 100.0
    with pytest.raises(ValueError):
        open_loop("http://127.0.0.1:9/", rate=0, duration=1)


def test_the_subprocess_generator_reports_the_same_way(server: str) -> None:
    from benchmarks.loadgen import open_loop_in_subprocess

    result = open_loop_in_subprocess(f"{server}/ok", rate=50, duration=0.4)
    assert result.requests == 20 and result.errors == 0 and len(result.latencies_ms) == 20


def test_a_server_that_never_answers_costs_errors_not_a_runaway_generator() -> None:
    """Requests queued behind a stalled server wait in the generator's own first-come queue, not in
    httpx's pool (whose per-change scan of its queue made ``make bench-api`` run for minutes): the
    run ends within about duration + 2 x timeout and counts every request as an error."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)  # accepts connections (the kernel's backlog) and never answers
    try:
        started = time.perf_counter()
        result = open_loop(f"http://127.0.0.1:{listener.getsockname()[1]}/", rate=200, duration=5, timeout=1.0)
        took = time.perf_counter() - started
    finally:
        listener.close()
    assert result.errors == 1000 and result.latencies_ms == ()
    assert took < 9, f"the run took {took:.1f} s"
