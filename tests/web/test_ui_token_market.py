"""The job form of a market paid in an ERC-20, in a real browser: approve the market, then create the job.

``sterling up`` deploys a native-currency market, so this module serves the gateway itself (in
process, under uvicorn) over an embedded chain whose market is paid in a test stablecoin, with
its indexer in a thread; the browser signs with a development account through the JSON-RPC relay.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Page, expect
from web3.contract import Contract

from marketplace import chain as chain_mod
from marketplace.abi import load_artifact
from sterling.localnet import LocalNet, bring_up
from tests.gateway.conftest import Gateway, list_toy, make_gateway
from tests.gateway.test_up import wait_until
from tests.web.conftest import SCREENSHOTS
from tests.web.test_ui_flows import back_up_key

pytestmark = [pytest.mark.browser, pytest.mark.slow]

USD = 10**6  # the test stablecoin has 6 decimals


@dataclass
class TokenMarket:
    url: str
    net: LocalNet
    gateway: Gateway
    token: Contract
    consumer: LocalAccount

    def balance(self, account: str) -> int:
        return int(self.token.functions.balanceOf(account).call())


@pytest.fixture(scope="module")
def token_market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenMarket]:
    root = tmp_path_factory.mktemp("token-ui")
    chain = chain_mod.embedded()
    minter = chain.new_account()
    artifact = load_artifact("TestStablecoin", test=True)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    address = chain.transact(minter, factory.constructor(), name="deploy TestStablecoin").receipt["contractAddress"]  # type: ignore[arg-type]
    token: Contract = chain.w3.eth.contract(address=address, abi=artifact["abi"])
    net = bring_up(chain, root / "net", payment_token=str(address))
    consumer = chain.new_account()
    chain.transact(minter, token.functions.mint(consumer.address, 100 * USD))
    gateway = make_gateway(net, root / "gateway", dev_accounts=(consumer,))
    stop = threading.Event()
    indexer = threading.Thread(target=gateway.indexer.run, args=(stop,), kwargs={"interval": 0.2}, daemon=True)
    indexer.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(gateway.app, log_level="warning", lifespan="off"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    serving.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not serving.is_alive() or time.monotonic() > deadline:
            pytest.fail("the gateway did not start")
        time.sleep(0.02)
    yield TokenMarket(f"http://127.0.0.1:{sock.getsockname()[1]}", net, gateway, token, consumer)
    gateway.app.state.feed.close()
    server.should_exit = True
    stop.set()
    serving.join(timeout=10)
    indexer.join(timeout=10)
    sock.close()
    gateway.client.close()
    gateway.index.close()
    net.close()


def test_the_job_form_approves_the_token_then_creates_the_job(token_market: TokenMarket, page: Page) -> None:
    t = token_market
    listed, _ = list_toy(t.net, 91, price=25 * USD)
    wait_until(lambda: t.gateway.client.get(f"/api/datasets/{listed.dataset_id}").status_code == 200, timeout=30)

    page.goto(f"{t.url}/#/jobs/new?datasets={listed.dataset_id}")
    expect(page.locator("label[for=fee]")).to_have_text("Worker fee (tUSD)")
    page.fill("#fee", "5")
    page.fill("#epochs", "1")
    expect(page.locator("#summary")).to_contain_text("Total to escrow: 30 tUSD")
    expect(page.locator("#create-submit")).to_have_text("Approve and create the job")
    back_up_key(page)
    page.click("#create-submit")
    page.wait_for_selector("#job-link", timeout=90_000)
    expect(page.locator("[data-step=approve]")).to_have_class("done")
    expect(page.locator("[data-step=create]")).to_have_class("done")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "create-a-job-token.png", full_page=True)

    job_id = int(str(page.get_attribute("#job-link", "href")).rsplit("/", 1)[1])
    job = t.gateway.client.get(f"/api/jobs/{job_id}").json()
    assert job["consumer"] == t.consumer.address and job["escrow_wei"] == str(30 * USD) and job["prices_wei"] == [str(25 * USD)]
    assert t.balance(t.consumer.address) == 70 * USD  # exactly the price and fee were pulled; no change to credit
    assert t.net.market.payment_allowance(t.consumer.address) == 0

    page.goto(f"{t.url}/#/account")
    expect(page.locator("#my-address")).to_have_text(t.consumer.address)
    expect(page.locator("#details")).to_contain_text("70 tUSD")
