"""The SDK's keep-alive inference transport against a real HTTP server: answers, refusals, busy
gateways, a connection the server closed while idle, and a gateway that is not there."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from enclave_worker.trusted.errors import VoucherStale
from marketplace.chain import free_port
from marketplace.serving import ServingUnavailable, http_transport


class _Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, bytes, int]] = []  # (path, content type, body, connection number)
    close_after_answer = False
    connections = itertools.count()

    def setup(self) -> None:  # one handler per accepted connection; a client port can be reused, this number cannot
        super().setup()
        self.connection_number = next(type(self).connections)

    def do_POST(self) -> None:  # noqa: N802 (the http.server API)
        # Decided before answering: once the answer is out, the test may already have turned it off.
        closing = type(self).close_after_answer
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append((self.path, self.headers["Content-Type"], body, self.connection_number))
        if body == b"stale":
            self._reply(402, {"detail": "the voucher is stale", "error": "VoucherStale"})
        elif body == b"busy":
            self._reply(503, {"detail": "the inference queue is full"}, {"Retry-After": "1"})
        elif body == b"garbage":
            self._reply(200, {"unexpected": True})
        else:
            self._reply(200, {"request_id": "0x00", "response": "0x" + body.hex(), "receipt_signature": "0xab" * 1})
        if closing:
            self.close_connection = True

    def _reply(self, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, ThreadingHTTPServer]]:
    _Gateway.seen = []
    _Gateway.close_after_answer = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", server
    finally:
        server.shutdown()
        server.server_close()


def test_answers_ride_one_keep_alive_connection(gateway: tuple[str, ThreadingHTTPServer]) -> None:
    url, _ = gateway
    send = http_transport(url)
    assert send(b"\x01\x02").response == b"\x01\x02"
    assert send(b"\x03").receipt_signature == b"\xab"
    (path, content_type, _, connection1), (_, _, _, connection2) = _Gateway.seen
    assert path == "/api/inference" and content_type == "application/octet-stream"
    assert connection1 == connection2  # the same connection


def test_refusals_and_busy_gateways_raise_what_they_mean(gateway: tuple[str, ThreadingHTTPServer]) -> None:
    url, _ = gateway
    send = http_transport(url)
    with pytest.raises(VoucherStale, match="stale"):
        send(b"stale")
    with pytest.raises(ServingUnavailable, match=r"HTTP 503: the inference queue is full \(retry after 1 s\)"):
        send(b"busy")
    with pytest.raises(ServingUnavailable, match="not an inference answer"):
        send(b"garbage")
    assert send(b"\x07").response == b"\x07"  # the connection is still good


def test_a_connection_the_gateway_closed_is_opened_again(gateway: tuple[str, ThreadingHTTPServer]) -> None:
    url, _ = gateway
    send = http_transport(url)
    _Gateway.close_after_answer = True  # the server closes after answering, without saying so in the headers
    assert send(b"\x01").response == b"\x01"
    _Gateway.close_after_answer = False
    assert send(b"\x02").response == b"\x02"
    assert [body for _, _, body, _ in _Gateway.seen] == [b"\x01", b"\x02"]
    assert _Gateway.seen[0][3] != _Gateway.seen[1][3]  # a new connection (its client port may be the old one's)


def test_no_gateway_and_bad_urls() -> None:
    send = http_transport(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServingUnavailable, match="did not answer"):
        send(b"\x01")
    for bad in ("ftp://example.org", "localhost:4000", "http://"):
        with pytest.raises(ValueError, match="not an http"):
            http_transport(bad)
