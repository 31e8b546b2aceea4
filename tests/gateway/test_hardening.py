"""Issue 14: the gateway's defaults against a hostile client or web page (docs/security.md, "Gateway").

Each test attacks `sterling up`'s gateway as the findings did: a looping ``eth_call``, RPC error
texts, DNS rebinding, framing and sniffing, CORS-simple POSTs, ``/vendor`` browsing, NaN and huge
integers in JSON.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from marketplace.config import checkout_root
from sterling.gateway.app import vendor_file_allowed
from sterling.gateway.headers import inline_script_hashes, split_host
from sterling.gateway.rpc import RpcGateway, cap_gas
from sterling.gateway.settings import get_settings, web_dir
from sterling.gateway.strict_json import strict_loads
from tests.gateway.conftest import Gateway

LOOP = "0x5b600056"  # JUMPDEST PUSH1 0 JUMP: loops until the gas runs out (30M gas ≈ 10 s on py-evm)
HEALTH_BUDGET_SECONDS = 0.1
ROOT = checkout_root()
NODE_MODULES = ROOT / "node_modules" if ROOT is not None else Path("node_modules")
WEB = web_dir(get_settings())


def rpc_request(method: str, params: Any, request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


@contextmanager
def served(gateway: Gateway, **overrides: object) -> Iterator[str]:
    """The gateway's app under a real uvicorn on a free loopback port, with the default Host allow-list for that port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = gateway.app_with(port=port, allowed_hosts=None, vendor_dir=NODE_MODULES, **overrides)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def local_client(app: FastAPI, host: str = "127.0.0.1:8000") -> TestClient:
    """A client that connects from loopback and asks for ``host``."""
    return TestClient(app, base_url=f"http://{host}", client=("127.0.0.1", 50000))


# 1. One RPC call must not freeze the gateway.


def test_a_looping_call_gets_an_error_in_its_time_limit_while_health_answers_at_once(gateway: Gateway) -> None:
    limit = 1.5
    with served(gateway, rpc_call_seconds=limit) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/api/health").status_code == 200
        reply: dict[str, Any] = {}

        def looping_call() -> None:
            started = time.monotonic()
            reply.update(client.post("/api/rpc", json=rpc_request("eth_call", [{"data": LOOP}, "latest"])).json())
            reply["seconds"] = time.monotonic() - started

        caller = threading.Thread(target=looping_call)
        caller.start()
        time.sleep(0.3)  # the loop is computing
        latencies = []
        while caller.is_alive() and len(latencies) < 20:
            started = time.monotonic()
            assert client.get("/api/health").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
        caller.join(timeout=30)
    assert not caller.is_alive()
    assert len(latencies) >= 5, "the looping call ended before health was measured"
    assert max(latencies) < HEALTH_BUDGET_SECONDS, f"/api/health took {max(latencies):.3f} s during the looping call"
    assert reply["error"] == {"code": -32000, "message": "execution timed out"} and reply["id"] == 1
    assert limit <= reply["seconds"] < limit + 2


def test_estimate_gas_of_a_loop_is_stopped_too(gateway: Gateway) -> None:
    client = local_client(gateway.app_with(rpc_call_seconds=0.5))
    started = time.monotonic()
    reply = client.post("/api/rpc", json=rpc_request("eth_estimateGas", [{"data": LOOP}])).json()
    assert time.monotonic() - started < 3
    assert reply["error"]["code"] == -32000


def test_the_gas_of_relayed_calls_is_capped(gateway: Gateway) -> None:
    assert cap_gas([{"to": "0x01"}], 30_000_000) == [{"to": "0x01", "gas": hex(30_000_000)}]
    assert cap_gas([{"gas": "0x5208"}, "latest"], 30_000_000) == [{"gas": "0x5208"}, "latest"]
    assert cap_gas([{"gas": "0xzz"}], 30_000_000) is None and cap_gas([], 30_000_000) is None
    assert get_settings().rpc_gas_cap == 30_000_000
    client = local_client(gateway.app_with(rpc_gas_cap=100_000, rpc_call_seconds=30))
    started = time.monotonic()
    reply = client.post("/api/rpc", json=rpc_request("eth_call", [{"data": LOOP, "gas": hex(2**40)}, "latest"])).json()
    assert reply["error"] == {"code": -32000, "message": "out of gas"}
    assert time.monotonic() - started < 2  # 100k gas, not 2^40 (or the block's 30M)
    bad = client.post("/api/rpc", json=rpc_request("eth_call", [{"data": LOOP, "gas": "lots"}, "latest"])).json()
    assert bad["error"]["code"] == -32602


def test_batches_are_capped_lower(gateway: Gateway) -> None:
    assert get_settings().rpc_max_batch <= 20
    client = local_client(gateway.app_with(rpc_max_batch=3))
    assert len(client.post("/api/rpc", json=[rpc_request("eth_chainId", [], i) for i in range(3)]).json()) == 3
    assert client.post("/api/rpc", json=[rpc_request("eth_chainId", [], i) for i in range(4)]).json()["error"]["code"] == -32600


# 2. RPC errors: standard codes, short messages, nothing internal.


@pytest.mark.parametrize(
    "params",
    [
        [{"to": "0x" + "11" * 20}, "latest", "extra", "more"],  # EthereumTester.call() takes … positional arguments
        [{"to": "not an address"}, "latest"],
        ["not a call object"],
        [{"to": "0x" + "11" * 20, "value": "0xnothex"}, "latest"],
    ],
)
def test_rpc_errors_are_standard_and_say_nothing_internal(gateway: Gateway, params: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="sterling.gateway.rpc"):
        reply = gateway.client.post("/api/rpc", json=rpc_request("eth_call", params, 9)).json()
    error = reply["error"]
    assert reply["id"] == 9 and error["code"] in (-32602, -32603, -32000)
    assert error["message"] in (
        "invalid params",
        "internal error",
        "execution failed",
        "invalid params: expected a call object with a hex gas, if any",
    )
    text = json.dumps(reply)
    for internal in ("Error", "Exception", "Traceback", "takes", "EthereumTester", "eth_tester", "web3", ".py"):
        assert internal not in text, text
    if error["message"] != "invalid params: expected a call object with a hex gas, if any":
        assert len([r for r in caplog.records if "eth_call" in r.getMessage()]) == 1  # the detail, logged once


def test_net_version_is_the_chain_id_in_decimal(gateway: Gateway) -> None:
    reply = gateway.client.post("/api/rpc", json=rpc_request("net_version", [])).json()
    assert reply["result"] == str(gateway.net.chain.chain_id)

    class Backend:
        async def call(self, method: str, params: Any, request_id: Any, *, time_limit: float | None = None) -> dict[str, Any]:
            return {"jsonrpc": "2.0", "id": request_id, "result": "1"}

    relay = RpcGateway(Backend(), max_batch=5, chain_id=31337, gas_cap=30_000_000, call_seconds=1.0)
    answer = anyio.run(relay.handle, json.dumps(rpc_request("net_version", [])).encode())
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": "31337"}


# 3. DNS rebinding: only the gateway's own names are answered; dev keys only to this machine.


def test_only_allowed_hosts_are_answered(gateway: Gateway) -> None:
    app = gateway.app_with(port=8000, allowed_hosts=None)
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST:8000"):
        assert local_client(app, host).get("/api/health").status_code == 200, host
    for host in ("rebind.attacker.example:8000", "localhost:8001", "127.0.0.1", "localhost.attacker.example:8000", "0.0.0.0:8000"):
        response = local_client(app, host).get("/api/config")
        assert response.status_code == 421 and "private_key" not in response.text, host
    assert TestClient(app).get("/").status_code == 421  # Host: testserver
    configured = gateway.app_with(allowed_hosts=("market.example.org", "10.0.0.5:8080"))
    assert local_client(configured, "market.example.org").get("/api/health").status_code == 200
    assert local_client(configured, "10.0.0.5:8080").get("/api/health").status_code == 200
    assert local_client(configured, "10.0.0.5:8081").get("/api/health").status_code == 421
    assert local_client(configured, "localhost:8000").get("/api/health").status_code == 421
    assert split_host("[::1]:8000") == ("[::1]", 8000) and split_host("::1") == ("::1", None)


def test_dev_keys_go_only_to_this_machine(gateway: Gateway) -> None:
    assert gateway.net.chain.kind == "embedded" and gateway.services.dev_accounts
    local = gateway.client.get("/api/config").json()["dev_accounts"]
    assert local and local[0]["private_key"].startswith("0x")
    deployed = gateway.app_with(allowed_hosts=("market.example.org", "localhost"))
    assert local_client(deployed, "market.example.org").get("/api/config").json()["dev_accounts"] == []
    from_the_lan = TestClient(deployed, base_url="http://localhost:8000", client=("192.168.1.20", 40000))
    assert from_the_lan.get("/api/config").json()["dev_accounts"] == []  # a forged Host from another machine


# 4. Browser-facing headers on every response.


def test_every_response_carries_the_security_headers(gateway: Gateway) -> None:
    app = gateway.app_with(vendor_dir=NODE_MODULES)
    client = local_client(app)
    responses = [
        client.get("/"),
        client.get("/js/app.js"),
        client.get("/api/health"),
        client.get("/api/datasets/999999999"),
        client.get("/vendor/ethers/dist/ethers.min.js"),
        client.get("/vendor/.bin/solcjs"),
        client.post("/api/specs", content=b"x", headers={"content-type": "text/plain"}),
        local_client(app, "attacker.example").get("/"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 404, 200, 404, 415, 421]
    (import_map,) = inline_script_hashes(WEB / "index.html")
    for response in responses:
        csp = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
        assert directives["script-src"] == f"'self' {import_map}"  # no 'unsafe-inline', no eval
        assert directives["style-src"] == "'self'" and directives["object-src"] == "'none'"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "frame-ancestors 'none'" in docs.headers["content-security-policy"]


# 5. State-changing routes take only their real content types.


def test_cors_simple_posts_get_415(gateway: Gateway) -> None:
    client = gateway.client
    for path in ("/api/blobs", "/api/specs", "/api/schemas", "/api/rpc", "/api/key-manager/deposits"):
        for media_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
            headers = {"content-type": media_type} if media_type else {}
            response = client.post(path, content=b'{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}', headers=headers)
            assert response.status_code == 415, (path, media_type)
    assert client.post("/api/blobs", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
    assert client.post("/api/specs", content=b"STRL", headers={"content-type": "application/octet-stream"}).status_code == 415
    spec = b'{"architecture": "logistic_regression", "epochs": 1, "batch_size": 8, "learning_rate": 0.1, "max_grad_norm": 1.0, "seed": 0}'
    assert client.post("/api/specs", content=spec, headers={"content-type": "application/json; charset=utf-8"}).status_code == 201
    ok = client.post("/api/rpc", json=rpc_request("eth_chainId", []))
    assert ok.status_code == 200 and ok.json()["result"] == hex(gateway.net.chain.chain_id)


# 6. /vendor serves the files the UI uses, nothing else.


def _import_map() -> dict[str, str]:
    match = re.search(r'<script type="importmap">(.*?)</script>', (WEB / "index.html").read_text(), re.DOTALL)
    assert match is not None
    imports: dict[str, str] = json.loads(match.group(1))["imports"]
    return imports


_SPECIFIER = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']""")


def ui_vendor_files() -> set[str]:
    """Every file under /vendor the UI can load: the import map's targets and what they import, transitively."""
    imports = _import_map()
    seen: set[str] = set()
    todo = [url for url in imports.values() if url.startswith("/vendor/")]
    for js in WEB.rglob("*.js"):
        todo += [imports.get(s, s) for s in _SPECIFIER.findall(js.read_text()) if imports.get(s, s).startswith("/vendor/")]
    while todo:
        url = todo.pop()
        path = url.removeprefix("/vendor/")
        if path in seen:
            continue
        seen.add(path)
        for spec in _SPECIFIER.findall((NODE_MODULES / path).read_text()):
            if spec in imports:
                todo.append(imports[spec])
            elif spec.startswith("./") or spec.startswith("../"):
                todo.append("/vendor/" + str(PurePosixPath(path).parent.joinpath(spec)).replace("/./", "/"))
    return {str(PurePosixPath(p)) for p in seen}


def _normalised(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def test_vendor_serves_only_what_the_ui_loads(gateway: Gateway) -> None:
    client = local_client(gateway.app_with(vendor_dir=NODE_MODULES))
    needed = {_normalised(p) for p in ui_vendor_files()}
    assert "ethers/dist/ethers.min.js" in needed and "@hpke/core/esm/mod.js" in needed and len(needed) > 10
    for path in sorted(needed):
        assert vendor_file_allowed(path), path
        response = client.get(f"/vendor/{path}")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript"), path
    refused = [
        ".bin/solcjs",
        ".bin/anvil",
        "@foundry-rs/anvil-linux-amd64/bin/anvil",
        "ethers/package.json",
        "ethers/dist/ethers.min.js.map",
        "ethers/lib.esm/index.js",
        "@hpke/core/esm/mod.js.map",
        "@hpke/core/esm/mod.d.ts",
        "@hpke/core/package.json",
        "solc/soljson.js",
        "../pyproject.toml",
        "%2e%2e/pyproject.toml",
        "@hpke/core/esm/../../../../pyproject.toml",
        "@hpke/core/esm/..%2f..%2f..%2f..%2fpyproject.toml",
        "",
    ]
    for path in refused:
        assert client.get(f"/vendor/{path}").status_code == 404, path
    assert not vendor_file_allowed("@hpke/core/esm/../../../.bin/solcjs.js")


# 7. Input edges: NaN, Infinity and 4,300-digit integers.


SPEC = (
    '{{"architecture": "logistic_regression", "epochs": 1, "batch_size": 8, "learning_rate": 0.1, "max_grad_norm": 1.0, '
    '"seed": {seed}{extra}}}'
)


@pytest.mark.parametrize(
    ("seed", "extra"),
    [
        ("1" * 4301, ""),
        ("0", ', "input_mean": [0, 0, 0, 0], "input_scale": [NaN, 1, 1, 1]'),
        ("0", ', "input_mean": [0, 0, 0, 0], "input_scale": [Infinity, 1, 1, 1]'),
        ("0", ', "input_mean": [0, 0, 0, 0], "input_scale": [1e999, 1, 1, 1]'),
        ("0", ', "input_mean": [-Infinity, 0, 0, 0], "input_scale": [1, 1, 1, 1]'),
    ],
)
def test_non_standard_json_specs_get_422(gateway: Gateway, seed: str, extra: str) -> None:
    response = gateway.client.post("/api/specs", content=SPEC.format(seed=seed, extra=extra), headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.headers["content-type"] == "application/json", response.text[:200]
    assert response.json()["detail"] and len(response.text) < 500


def test_non_standard_json_is_refused_everywhere(gateway: Gateway) -> None:
    client = gateway.client
    for path in ("/api/schemas", "/api/key-manager/deposits"):
        response = client.post(path, content=b'{"content_hash": NaN, "version": 1}', headers={"content-type": "application/json"})
        assert response.status_code == 422 and "NaN" in response.json()["detail"], (path, response.text)
        huge = client.post(path, content=b'{"version": ' + b"9" * 5000 + b"}", headers={"content-type": "application/json"})
        assert huge.status_code == 422 and huge.headers["content-type"] == "application/json", path
    reply = client.post(
        "/api/rpc",
        content=b'{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": [NaN]}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 200 and reply.json()["error"]["code"] == -32700
    assert strict_loads(b'{"a": [1, 2.5, -3e2, "NaN"]}') == {"a": [1, 2.5, -300.0, "NaN"]}


# The UI still loads under the policy and the allow-list, in a real browser.


CHROMIUM = Path("/usr/bin/chromium")


def test_the_ui_loads_in_a_browser_without_policy_violations(gateway: Gateway) -> None:
    """The page, its import map, ethers, and the HPKE modules (imported as the listing flow does) all load."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: run `make setup`")
    messages: list[str] = []
    failed: list[str] = []
    with served(gateway) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        page = browser.new_page()
        page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        page.goto(url + "/")
        try:
            page.wait_for_selector("#account-select option", state="attached", timeout=15_000)  # no wait_for_function: it evals
            crypto_exports = page.evaluate("async () => Object.keys(await import('/js/crypto/index.js')).length")
        except PlaywrightError as e:
            pytest.fail(f"the UI did not load: {e.message.splitlines()[0]}; console: {messages}; failed: {failed}")
        text = page.inner_text("#view")
        browser.close()
    assert not [m for m in messages if "Content Security Policy" in m or m.startswith(("error", "pageerror"))], messages
    assert not failed, failed
    assert text.strip() and crypto_exports > 0
