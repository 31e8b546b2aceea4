"""The UI's browser-wallet path (EIP-1193, the way a MetaMask user signs) in Chromium, against anvil.

An injected ``window.ethereum`` behaves as a wallet does: it answers ``eth_requestAccounts`` and
``eth_chainId``, starts on another chain and switches on ``wallet_switchEthereumChain``, signs
``eth_signTypedData_v4`` and ``eth_sendTransaction`` with its own key (here in Python, through
Playwright's exposed function) and sends them to the node, forwards reads to it, emits
``accountsChanged`` / ``chainChanged``, and rejects with code 4001 when its user says no.
The flows: list a dataset → create a job → withdraw, a rejected signature shown as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from playwright.sync_api import Browser, Page, expect

from tests.gateway.test_up import sterling_up, wait_until
from tests.web.test_ui_flows import back_up_key, describe_dataset, hospital_csv  # noqa: F401 - a fixture of this module too

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.slow]

MAINNET = 1

SHIM = """
(() => {
  const listeners = {};
  const emit = (event, value) => (listeners[event] || []).slice().forEach((fn) => fn(value));
  window.ethereum = {
    isSterlingTestWallet: true,
    async request({ method, params }) {
      const reply = await window.sterlingWallet(method, params === undefined ? [] : params);
      if (reply.error) throw Object.assign(new Error(reply.error.message), { code: reply.error.code, data: reply.error.data });
      if (reply.emit) emit(reply.emit[0], reply.emit[1]);
      return reply.result;
    },
    on(event, fn) { (listeners[event] = listeners[event] || []).push(fn); return this; },
    removeListener(event, fn) { listeners[event] = (listeners[event] || []).filter((f) => f !== fn); return this; },
    _emit: emit,
  };
})();
"""


@dataclass
class Wallet:
    """The wallet's side: its accounts, its chain, what its user approves, and the node it talks to."""

    rpc: str
    account: LocalAccount
    chain_id: int = MAINNET
    known_chains: set[int] = field(default_factory=lambda: {MAINNET})
    reject: set[str] = field(default_factory=set)
    """Methods the user declines, once each."""
    asked: list[str] = field(default_factory=list)
    failures: list[Any] = field(default_factory=list)
    connected: bool = False

    def node(self, method: str, params: list[Any]) -> Any:
        reply = httpx.post(self.rpc, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30).json()
        if "error" in reply:
            raise RuntimeError(json.dumps(reply["error"]))
        return reply["result"]

    def handle(self, method: str, params: list[Any]) -> dict[str, Any]:
        self.asked.append(method)
        if method in self.reject:
            self.reject.discard(method)
            return {"error": {"code": 4001, "message": "User rejected the request."}}
        try:
            return self._answer(method, params)
        except RuntimeError as e:  # the node's JSON-RPC error, passed on as a wallet passes it on
            error = json.loads(str(e))
            self.failures.append((method, params, error))
            return {"error": {"code": error.get("code", -32603), "message": error.get("message", ""), "data": error.get("data")}}
        except Exception as e:  # a bug of this test wallet: say it, as a wallet's internal error
            self.failures.append((method, params, repr(e)))
            return {"error": {"code": -32603, "message": f"wallet error: {e!r}"}}

    def _answer(self, method: str, params: list[Any]) -> dict[str, Any]:
        if method == "eth_requestAccounts":  # the user connects the site
            self.connected = True
            return {"result": [self.account.address]}
        if method == "eth_accounts":  # nothing before the site is connected, as MetaMask answers
            return {"result": [self.account.address] if self.connected else []}
        if method == "eth_chainId":
            return {"result": hex(self.chain_id)}
        if method == "net_version":
            return {"result": str(self.chain_id)}
        if method == "wallet_switchEthereumChain":
            wanted = int(params[0]["chainId"], 16)
            if wanted not in self.known_chains:
                return {"error": {"code": 4902, "message": f"Unrecognized chain ID {params[0]['chainId']}."}}
            self.chain_id = wanted
            return {"result": None, "emit": ["chainChanged", hex(wanted)]}
        if method == "wallet_addEthereumChain":
            chain = int(params[0]["chainId"], 16)
            if int(self.node("eth_chainId", []), 16) != chain:
                return {"error": {"code": -32602, "message": "the RPC URL serves another chain"}}
            self.known_chains.add(chain)
            return {"result": None}
        if self.chain_id != int(self.node("eth_chainId", []), 16) and method.startswith(("eth_send", "eth_sign")):
            return {"error": {"code": 4100, "message": "the wallet is on another chain"}}
        if method == "eth_signTypedData_v4":
            assert str(params[0]).lower() == self.account.address.lower()
            typed = json.loads(params[1]) if isinstance(params[1], str) else params[1]
            return {"result": "0x" + self.account.sign_typed_data(full_message=typed).signature.hex()}
        if method == "personal_sign":
            return {"result": "0x" + self.account.sign_message(encode_defunct(hexstr=params[0])).signature.hex()}
        if method == "eth_sendTransaction":
            return {"result": self._send(params[0])}
        return {"result": self.node(method, params)}

    def _send(self, tx: dict[str, Any]) -> str:
        assert str(tx["from"]).lower() == self.account.address.lower()
        fields: dict[str, Any] = {"data": tx.get("data", "0x"), "value": int(tx.get("value", "0x0"), 16)}
        if tx.get("to"):
            fields["to"] = to_checksum_address(tx["to"])
        fields["chainId"] = self.chain_id
        fields["nonce"] = int(self.node("eth_getTransactionCount", [self.account.address, "pending"]), 16)
        estimate = {"from": self.account.address, **{k: v for k, v in tx.items() if k in ("to", "data", "value")}}
        fields["gas"] = int(tx["gas"], 16) if "gas" in tx else int(int(self.node("eth_estimateGas", [estimate]), 16) * 1.2)
        base = int(self.node("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
        fields["maxPriorityFeePerGas"] = 10**9
        fields["maxFeePerGas"] = 2 * base + 10**9
        signed = self.account.sign_transaction(fields)
        return str(self.node("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()]))


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("ui-wallet")
    with sterling_up(root / "state", root / "up.log") as (client, _):
        yield client


def wallet_page(browser: Browser, wallet: Wallet) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.expose_function("sterlingWallet", wallet.handle)
    context.add_init_script(SHIM)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def test_list_create_and_withdraw_through_an_injected_wallet(up: httpx.Client, browser: Browser, hospital_csv) -> None:  # noqa: F811
    base = str(up.base_url)
    config = up.get("/api/config").json()
    provider = Account.from_key(config["dev_accounts"][0]["private_key"])
    consumer = Account.from_key(config["dev_accounts"][1]["private_key"])
    wallet = Wallet(rpc=f"{base}/api/rpc", account=provider)
    page, errors = wallet_page(browser, wallet)

    # The provider lists a dataset: the wallet is asked to switch chains (it adds Sterling's first),
    # to sign the key deposit (EIP-712) and to send the listing.
    page.goto(f"{base}/#/list")
    page.select_option("#account-select", "injected")
    page.wait_for_selector("#file")
    page.set_input_files("#file", hospital_csv)
    page.select_option("#label-column", "diagnosis")
    describe_dataset(page, "Biopsies via a wallet")
    page.fill("#price", "0.5")
    wallet.reject.add("eth_signTypedData_v4")  # the user first declines to sign the key deposit
    page.click("#list-submit")
    expect(page.locator("main .error-box")).to_have_text("You declined the signature in your wallet; nothing was sent.", timeout=60_000)
    assert "eth_sendTransaction" not in wallet.asked
    page.click("#list-submit")
    page.wait_for_selector("#listed-link, main .error-box", timeout=90_000)
    assert page.locator("#listed-link").count() == 1, (page.locator("main .error-box").all_inner_texts(), wallet.failures)
    dataset_id = int(str(page.get_attribute("#listed-link", "href")).rsplit("/", 1)[1])
    assert up.get(f"/api/datasets/{dataset_id}").json()["provider"] == provider.address
    assert wallet.chain_id == int(config["chain_id"])
    for method in (
        "wallet_switchEthereumChain",
        "wallet_addEthereumChain",
        "eth_requestAccounts",
        "eth_signTypedData_v4",
        "eth_sendTransaction",
    ):
        assert method in wallet.asked, (method, wallet.asked)

    # The wallet's user switches to another account: the page follows (accountsChanged).
    wallet.account = consumer
    page.evaluate("(address) => window.ethereum._emit('accountsChanged', [address])", consumer.address)
    page.goto(f"{base}/#/jobs/new?datasets={dataset_id}")
    page.wait_for_selector("#job-form")
    page.fill("#epsilon", "1")
    page.fill("#epochs", "2")
    page.fill("#hidden", "8")
    back_up_key(page)
    expect(page.locator("#create-submit")).to_be_enabled()
    page.click("#create-submit")
    page.wait_for_selector("#job-link", timeout=60_000)
    job_id = int(str(page.get_attribute("#job-link", "href")).rsplit("/", 1)[1])
    assert up.get(f"/api/jobs/{job_id}").json()["consumer"] == consumer.address
    wait_until(lambda: up.get(f"/api/jobs/{job_id}").json()["status"] == "completed", timeout=180)

    # Back to the provider; the user declines the withdrawal first, then accepts it.
    wallet.account = provider
    page.evaluate("(address) => window.ethereum._emit('accountsChanged', [address])", provider.address)
    page.goto(f"{base}/#/account")
    expect(page.locator("#my-address")).to_have_text(provider.address)
    expect(page.locator("#pending")).to_have_text("0.5 ETH", timeout=30_000)
    wallet.reject.add("eth_sendTransaction")
    page.click("#withdraw")
    expect(page.locator("#withdraw-status .error-box")).to_have_text("You rejected the transaction in your wallet.", timeout=30_000)
    assert up.get("/api/payments", params={"account": provider.address}).json()["pending_wei"] == str(5 * 10**17)
    page.click("#withdraw")
    page.wait_for_selector("#withdraw-status .ok-box", timeout=60_000)
    wait_until(lambda: up.get("/api/payments", params={"account": provider.address}).json()["pending_wei"] == "0", timeout=30)
    assert not errors, errors


def test_a_declined_chain_switch_is_said_as_such(up: httpx.Client, browser: Browser) -> None:
    base = str(up.base_url)
    config = up.get("/api/config").json()
    wallet = Wallet(rpc=f"{base}/api/rpc", account=Account.from_key(config["dev_accounts"][2]["private_key"]))
    wallet.known_chains.add(int(config["chain_id"]))
    wallet.reject.add("wallet_switchEthereumChain")
    page, _ = wallet_page(browser, wallet)
    page.goto(f"{base}/#/account")  # with a wallet in the browser, it is the account chosen first
    expect(page.locator("#account-select")).to_have_value("injected")
    expect(page.locator("main .error-box")).to_contain_text(
        f"Your wallet is on chain {MAINNET}, and the switch to chain {config['chain_id']} was declined in it.", timeout=30_000
    )
    assert "wallet_switchEthereumChain" in wallet.asked and wallet.chain_id == MAINNET
    # Asked again (the user now accepts), the page shows the wallet's account on the right chain.
    page.reload()
    expect(page.locator("#my-address")).to_have_text(wallet.account.address, timeout=30_000)
    assert wallet.chain_id == int(config["chain_id"])
