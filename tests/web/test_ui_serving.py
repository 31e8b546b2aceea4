"""Serving in a real browser against ``sterling up`` on anvil (docs/inference.md, issue 15).

An owner's model is listed from Python (sealed, its key deposited through the gateway); the
client finds it in the catalogue, buys credit, types a row and gets the answer — encrypted in the
page to the inference enclave's on-chain key, paid with a voucher the page signs, the receipt
verified in the page — equal to what native torch gives for that row. The operator redeems on
its own (``STERLING_UP_REDEEM_INTERVAL``); the owner sees the usage and earnings and withdraws.
Screenshots (desktop and phone) go to ``screenshots/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from eth_account import Account
from playwright.sync_api import Browser, Page, expect

from enclave_worker.trusted.onchain import OutputPolicy
from marketplace.chain import connect_gateway
from marketplace.contracts import RegistryClient
from marketplace.gateway_client import GatewayModelKeys, GatewayModelStore
from marketplace.model_market import ModelMarketClient
from marketplace.serving import list_model, model_weights
from tests.e2e.test_serving import DIGITS_SCHEMA, _trained_digits_model
from tests.gateway.test_up import sterling_up, wait_until
from tests.web.test_ui_flows import PHONE, shoot, use_account

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.slow]

PRICE = 10**14
DECIMALS = 3


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("ui-serving-up")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STERLING_UP_REDEEM_INTERVAL", "2")
        with sterling_up(root / "state", root / "up.log") as (client, _):
            yield client


@pytest.fixture(scope="module")
def listed(up: httpx.Client) -> dict[str, Any]:
    """The owner (dev account 2) lists a digits classifier through the gateway, answering probabilities."""
    config = up.get("/api/config").json()
    owner = Account.from_key(config["dev_accounts"][2]["private_key"])
    chain = connect_gateway(str(up.base_url))
    market = ModelMarketClient(chain, config["contracts"]["model_market"])
    registry = RegistryClient(chain, config["contracts"]["enclave_registry"])
    model, spec, x, _ = _trained_digits_model(seed=4)
    result = list_model(
        model_weights(model, spec, DIGITS_SCHEMA), spec, owner, price_per_query=PRICE, output_policy=OutputPolicy.PROBABILITIES,
        output_param=DECIMALS, query_cap=1000, model_market=market, registry=registry, key_manager=GatewayModelKeys(up),
        store=GatewayModelStore(up),
    )  # fmt: skip
    return {"model_id": result.model_id, "model": model, "x": x, "owner": owner.address, "market": market}


def expected_probabilities(model: torch.nn.Module, row: np.ndarray) -> list[float]:
    """What the PROBABILITIES policy releases for ``row``, computed with native torch."""
    with torch.inference_mode():
        p = torch.softmax(model(torch.from_numpy(row[None, :])), dim=1)
        units = torch.round(p * float(10**DECIMALS)).to(torch.int64)[0].tolist()
    return [u / 10**DECIMALS for u in units]


def ask_row(page: Page, row: np.ndarray) -> list[float]:
    page.fill("#row", ", ".join(f"{v:.6g}" for v in row))
    page.click("#ask-submit")
    expect(page.locator("#receipt-ok")).to_be_visible(timeout=60_000)
    expect(page.locator("#answer-error")).to_have_count(0)
    return json.loads(str(page.locator("#answer .answer").get_attribute("data-values")))


def test_try_a_model_in_the_browser_then_the_owner_withdraws(up: httpx.Client, browser: Browser, listed: dict[str, Any]) -> None:
    base = str(up.base_url)
    config = up.get("/api/config").json()
    client_address = config["dev_accounts"][1]["address"]
    model_id, model, x = listed["model_id"], listed["model"], listed["x"]
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))

    # The catalogue shows the listing's terms; its page checks the serving enclave in the registry.
    page.goto(f"{base}/#/models")
    use_account(page, 1)
    card = page.locator(f"[data-model-id='{model_id}']")
    expect(card).to_contain_text("0.0001 ETH")
    expect(card).to_contain_text("probabilities, rounded to 3 decimals")
    expect(card).to_contain_text("1,000 rows per client")
    expect(card).to_contain_text("Active")
    shoot(page, "models")
    card.locator("a").click()
    expect(page.locator("main h1")).to_have_text(f"Model #{model_id}")
    expect(page.locator("#enclave-check")).to_contain_text("active inference enclave in the registry")
    expect(page.locator("#model-spec")).to_contain_text("mlp")
    expect(page.locator("#channel-deposited")).to_have_text("0 ETH")

    # Asking without credit is refused in the page: nothing is signed or sent.
    page.fill("#row", ", ".join(f"{v:.6g}" for v in x[0]))
    page.click("#ask-submit")
    expect(page.locator("#answer-error")).to_contain_text("deposit more first")

    # The client buys credit for 100 rows.
    page.fill("#deposit-amount", "0.01")
    page.click("#deposit-submit")
    expect(page.locator("#deposit-ok")).to_be_visible(timeout=60_000)
    expect(page.locator("#channel-deposited")).to_have_text("0.01 ETH", timeout=30_000)
    channel = up.get(f"/api/models/{model_id}/channels/{client_address}").json()
    assert channel["deposited_wei"] == str(100 * PRICE)

    # Two rows, each encrypted in the page and answered as native torch answers it, receipt verified.
    for i, row in enumerate((x[0], x[7]), start=1):
        got = ask_row(page, row)
        assert got == pytest.approx(expected_probabilities(model, row), abs=1e-9)
        assert int(np.argmax(got)) == int(np.argmax(expected_probabilities(model, row)))
        expect(page.locator("#answer-voucher")).to_contain_text(f"for {i} quer")
        expect(page.locator("#ask-steps li.done")).to_have_count(5)
    expect(page.locator("#answer-probabilities .prob-row")).to_have_count(10)
    expect(page.locator("#voucher-totals")).to_contain_text("0.0002 ETH for 2 queries")
    shoot(page, "model-try-it")

    # A bad row is caught in the page.
    page.fill("#row", "1, two, 3")
    page.click("#ask-submit")
    expect(page.locator("#row-error")).to_contain_text('Value 2 ("two") is not a number')

    # The operator redeems the latest voucher by itself; the client's page follows the chain.
    wait_until(lambda: up.get(f"/api/models/{model_id}/channels/{client_address}").json()["redeemed_queries"] == 2, timeout=60)
    expect(page.locator("#channel-redeemed")).to_contain_text("0.0002 ETH", timeout=30_000)
    page.goto(f"{base}/#/models")
    expect(page.locator(f"#my-channels [data-channel='{model_id}']")).to_contain_text("0.0098 ETH")

    # The owner sees the usage and earnings (the price less the operator's fee) and withdraws.
    fee_bps = listed["market"].operator_fee_bps()
    share = 2 * PRICE - 2 * PRICE * fee_bps // 10_000
    use_account(page, 2)
    owned = page.locator(f"[data-owned-model='{model_id}']")
    expect(owned.locator("[data-usage=queries]")).to_have_text("2", timeout=30_000)
    expect(page.locator("#model-earnings")).to_have_text(f"{share / 10**18:g} ETH")
    shoot(page, "models-owner")
    page.goto(f"{base}/#/models/{model_id}")
    expect(page.locator("#owner-panel")).to_be_visible()
    expect(page.locator("#usage-queries")).to_have_text("2")
    shoot(page, "model-owner")
    page.goto(f"{base}/#/models")
    page.click("#model-withdraw")
    expect(page.locator("#model-withdraw-ok")).to_be_visible(timeout=60_000)
    expect(page.locator("#model-earnings")).to_have_text("0 ETH", timeout=30_000)
    assert listed["market"].credits(listed["owner"]) == 0

    # Readable on a phone.
    use_account(page, 1)
    page.set_viewport_size(PHONE)
    for route, name in [("#/models", "models"), (f"#/models/{model_id}", "model-detail")]:
        page.goto(f"{base}/{route}")
        expect(page.locator("main h1")).to_contain_text("Model")
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{route} is {overflow}px wider than a phone screen"
        shoot(page, f"phone-{name}")
    context.close()
    assert not errors, errors
