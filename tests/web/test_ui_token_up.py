"""The browser flows on `sterling up --payment-token test`: a market paid in a test stablecoin,
listed, bought (approve, then create) and paid out in it, with the trainer a child process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.gateway.test_up import wait_until
from tests.web.test_ui_flows import back_up_key, describe_dataset, hospital_csv, use_account  # noqa: F401 - hospital_csv is a fixture of this module too

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.slow]


@pytest.fixture(scope="module")
def token_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    from sterling.up import spawned

    root = tmp_path_factory.mktemp("ui-token-up")
    with (
        spawned(root / "state", log=root / "up.log", options=("--payment-token", "test")) as (url, _),
        httpx.Client(base_url=url) as client,
    ):
        yield client


def test_list_buy_and_withdraw_in_tokens_on_sterling_up(token_up: httpx.Client, browser: Browser, hospital_csv: Path) -> None:  # noqa: F811
    up = token_up
    base = str(up.base_url)
    config = up.get("/api/config").json()
    symbol = config["payment_token"]["symbol"]
    provider, consumer = config["dev_accounts"][0]["address"], config["dev_accounts"][1]["address"]
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

    page.goto(f"{base}/#/list")
    use_account(page, 0)
    page.wait_for_selector("#file")
    expect(page.locator("label[for=price]")).to_contain_text(symbol)
    page.set_input_files("#file", hospital_csv)
    page.select_option("#label-column", "diagnosis")
    describe_dataset(page, "Biopsies for tokens")
    page.fill("#price", "25")
    page.click("#list-submit")
    page.wait_for_selector("#listed-link", timeout=90_000)
    dataset_id = int(str(page.get_attribute("#listed-link", "href")).rsplit("/", 1)[1])
    assert up.get(f"/api/datasets/{dataset_id}").json()["price_wei"] == str(25 * 10**6)

    use_account(page, 1)
    page.goto(f"{base}/#/jobs/new?datasets={dataset_id}")
    page.wait_for_selector("#job-form")
    page.fill("#epsilon", "1")
    page.fill("#epochs", "2")
    page.fill("#hidden", "8")
    page.fill("#fee", "5")
    expect(page.locator("#summary")).to_contain_text(f"Total to escrow: 30 {symbol}")
    expect(page.locator("#create-submit")).to_have_text("Approve and create the job")
    back_up_key(page)
    page.click("#create-submit")
    page.wait_for_selector("#job-link", timeout=90_000)
    job_id = int(str(page.get_attribute("#job-link", "href")).rsplit("/", 1)[1])
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["consumer"] == consumer and job["escrow_wei"] == str(30 * 10**6)
    wait_until(lambda: up.get(f"/api/jobs/{job_id}").json()["status"] == "completed", timeout=180)

    use_account(page, 0)
    page.goto(f"{base}/#/account")
    expect(page.locator("#pending")).to_have_text(f"25 {symbol}", timeout=30_000)
    page.click("#withdraw")
    page.wait_for_selector("#withdraw-status .ok-box", timeout=60_000)
    wait_until(lambda: up.get("/api/payments", params={"account": provider}).json()["pending_wei"] == "0", timeout=30)
