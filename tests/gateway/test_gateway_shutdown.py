"""A stopping gateway ends its event streams first, so an open browser tab does not hold it up."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from marketplace.chain import free_port
from sterling.standalone import GRACEFUL_SHUTDOWN_SECONDS, GatewayServer
from tests.gateway.conftest import Gateway


def test_a_gateway_with_an_event_stream_open_stops_within_its_grace(gateway: Gateway, tmp_path: Path) -> None:
    port = free_port()
    app = gateway.app_with(port=port)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS
    )
    server = GatewayServer(config, on_exit=app.state.feed.close)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the gateway did not start"
        time.sleep(0.02)
    ended = threading.Event()

    def listen() -> None:  # a browser tab's live timeline
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(10, read=None)) as client:
            try:
                with client.stream("GET", "/api/events") as response:
                    assert response.status_code == 200
                    listening.set()
                    for _ in response.iter_lines():
                        pass
            except httpx.HTTPError:
                pass
        ended.set()

    listening = threading.Event()
    threading.Thread(target=listen, daemon=True).start()
    assert listening.wait(10)
    started = time.monotonic()
    server.handle_exit(signal.SIGTERM, None)
    thread.join(30)
    assert not thread.is_alive(), "the gateway still runs"
    assert time.monotonic() - started < GRACEFUL_SHUTDOWN_SECONDS  # it ended the stream, not waited out the grace
    assert ended.wait(5), "the event stream was not ended"
