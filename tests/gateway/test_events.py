"""Server-sent events: chain events appear on the stream once indexed; a closed stream leaves nothing behind."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from marketplace.consumer import Consumer
from marketplace.contracts import epsilon_units
from sterling.gateway.feed import event_of
from oracle.index_db import ChainEvent
from tests.conftest import toy_spec
from tests.gateway.conftest import Gateway, list_toy

Event = tuple[str, str | None, dict[str, Any]]


@contextmanager
def stream(gateway: Gateway, **headers: str) -> Iterator[queue.Queue[Event]]:
    """Read ``/api/events`` in a thread; yields a queue of parsed (event, id, data)."""
    events: queue.Queue[Event] = queue.Queue()
    with gateway.client.stream("GET", "/api/events", headers=headers) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")

        def read() -> None:
            name, event_id, data = "message", None, ""
            try:
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("data: "):
                        data += line[6:]
                    elif line == "" and data:
                        events.put((name, event_id, json.loads(data)))
                        name, event_id, data = "message", None, ""
            except Exception:  # the stream was closed under the reader
                return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        yield events
    reader.join(10)


def wait_for(events: queue.Queue[Event], predicate: Any, timeout: float = 20) -> Event:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if predicate(event):
            return event
    raise AssertionError("expected event did not arrive")


def test_chain_events_and_progress_are_pushed_and_disconnects_leave_no_stream(gateway: Gateway) -> None:
    net = gateway.net
    feed = gateway.app.state.feed
    gateway.sync()
    with stream(gateway) as events:
        first = wait_for(events, lambda e: e[0] == "block")
        assert first[2]["indexed_block"] == net.chain.w3.eth.block_number
        listed, provider = list_toy(net, 61, price=7 * 10**16)
        gateway.sync()
        _, event_id, data = wait_for(events, lambda e: e[0] == "dataset" and e[2]["event"] == "DatasetListed")
        assert data["dataset_id"] == listed.dataset_id and event_id is not None and data["tx_hash"] == listed.tx.tx_hash
        block = wait_for(events, lambda e: e[0] == "block")
        assert block[2]["indexed_block"] == net.chain.w3.eth.block_number
        assert net.worker.status is not None
        net.worker.status.update(424242, {"stage": "training", "epoch": 1, "epochs": 3, "epsilon": 0.25})
        progress = wait_for(events, lambda e: e[0] == "progress" and e[2]["job_id"] == 424242)
        assert progress[2]["stage"] == "training" and progress[2]["epoch"] == 1 and progress[2]["epsilon"] == 0.25
        assert feed.open_streams >= 1
    deadline = time.monotonic() + 10
    while feed.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert feed.open_streams == 0  # the server side of the closed stream is gone

    # A reconnecting client resumes after the last event it saw.
    with stream(gateway, **{"last-event-id": str(int(event_id) - 1)}) as events:
        resumed = wait_for(events, lambda e: e[0] == "dataset")
        assert resumed[1] == event_id and resumed[2]["dataset_id"] == listed.dataset_id
    assert provider.address  # the provider listed through the chain, not the gateway


def test_closing_the_feed_ends_open_streams(gateway: Gateway) -> None:
    """What `sterling up` does when shutdown begins, so an open browser tab does not hold it up."""
    app = gateway.app_with()
    client = TestClient(app)
    with client.stream("GET", "/api/events") as response:
        lines = response.iter_lines()
        assert next(lines) == "event: block"
        app.state.feed.close()
        rest = list(lines)  # ends: the server finished the response
    assert app.state.feed.open_streams == 0 and not any(line.startswith("event: dataset") for line in rest)


def test_provider_changes_and_cancellations_are_pushed(gateway: Gateway) -> None:
    net = gateway.net
    gateway.sync()
    with stream(gateway) as events:
        wait_for(events, lambda e: e[0] == "block")
        listed, provider = list_toy(net, 63, price=10**16)
        consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
        created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
        net.market.set_dataset_paused(provider, listed.dataset_id, True)
        net.market.top_up_budget(provider, listed.dataset_id, epsilon_units(1))
        consumer.cancel_job(created.job_id)
        gateway.sync()
        for name in ("DatasetStatusChanged", "BudgetToppedUp", "EpsilonReleased"):
            _, _, data = wait_for(events, lambda e, name=name: e[0] == "dataset" and e[2]["event"] == name)
            assert data["dataset_id"] == listed.dataset_id, name
        _, _, refund = wait_for(events, lambda e: e[0] == "payment" and e[2]["job_id"] == created.job_id)  # credited, then JobCancelled
        assert refund["account"] == consumer.account.address and refund["amount_wei"] == str(created.escrow)
        _, _, cancelled = wait_for(events, lambda e: e[0] == "job" and e[2]["stage"] == "cancelled")
        assert cancelled["job_id"] == created.job_id and cancelled["event"] == "JobCancelled"


def test_the_emergency_stop_is_a_market_event() -> None:
    where = {"block": 9, "timestamp": 1, "tx_hash": "0x" + "ab" * 32, "log_index": 0, "contract": "0x" + "11" * 20}
    governance = "0x" + "22" * 20
    paused = event_of(ChainEvent(id=41, name="Paused", account=governance, data={"account": governance}, **where))
    unpaused = event_of(ChainEvent(id=42, name="Unpaused", account=governance, data={"account": governance}, **where))
    assert (paused.event, paused.id, paused.data["paused"], paused.data["account"]) == ("market", "41", True, governance)
    assert (unpaused.event, unpaused.data["paused"]) == ("market", False)
    revoked = event_of(ChainEvent(id=43, name="EnclaveRevoked", account=None, data={"signer": governance}, **where))
    assert (revoked.event, revoked.data["signer"]) == ("worker", governance)
