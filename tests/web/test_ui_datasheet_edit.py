"""The provider edits a listing's datasheet from the dataset page, in a real browser against ``sterling up`` on anvil.

The form is prefilled from the current datasheet (the declared bounds shown, not editable); a blank
title is refused next to its field and nothing is published or sent; a good edit is published, its
hash sent with ``setDatasheet`` and the page shows the new datasheet — the on-chain hash is the one
Python's ``Datasheet.hash()`` gives the expected document. Another account sees no edit control.

Desktop (1280x900) and phone (390x844); screenshots to ``screenshots/``. One ``sterling up`` for the module.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from playwright.sync_api import Browser, Page, Request, expect

from marketplace.datasets import CREDIT_SCORING_FEATURES, credit_scoring
from marketplace.datasheet import Datasheet
from marketplace.gateway_client import encode_market_call, indexed_id, list_dataset_over_http, rpc
from tests.conftest import toy_terms
from tests.gateway.test_up import sterling_up, wait_until
from tests.web.test_ui_datasheets import assert_in_view
from tests.web.test_ui_flows import shoot, use_account

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
RUN = secrets.token_hex(3)
PROVIDER, OTHER = 2, 1
"""Development accounts (indexes into ``/api/config``'s ``dev_accounts``)."""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("datasheet-edit-up")
    with sterling_up(root / "state", root / "up.log") as (client, _):
        yield client


def original_sheet(name: str) -> dict[str, Any]:
    """A full datasheet (every optional field set) for the 120-row credit table, columns in the schema's order."""
    return {
        "version": 1,
        "title": f"Crédit {name} {RUN}",
        "description": "Loans and defaults, one row per loan.\nSecond line.",
        "tags": ["credit", f"run-{RUN}"],
        "license": "CC-BY-4.0",
        "provider_name": "Banque Étoile",
        "rows": 120,
        "label": {"name": "default", "description": "1 if the borrower defaulted within 12 months"},
        "columns": [
            {"name": "age", "description": "age at application", "unit": "years"},
            {"name": "income", "description": "declared yearly income", "unit": "EUR per year"},
            {"name": "late_payments", "unit": "count"},
        ],
        "provenance": "A lender's book.",
        "intended_uses": "Credit-risk research.",
        "collection_period": {"start": "2020-01-01", "end": "2020-12-31"},
    }


def list_with_sheet(up: httpx.Client, doc: dict[str, Any], seed: int) -> int:
    """The credit table (declared bounds) listed over HTTP by the provider with ``doc`` as its datasheet; its indexed id."""
    provider = Account.from_key(up.get("/api/config").json()["dev_accounts"][PROVIDER]["private_key"])
    listing = list_dataset_over_http(
        up, provider, credit_scoring(120, seed, declare_bounds=True), toy_terms(), datasheet=Datasheet.from_json(doc)
    )
    dataset_id = indexed_id(listing.receipt, "DatasetListed")
    wait_until(lambda: (up.get(f"/api/datasets/{dataset_id}").json().get("datasheet") or {}).get("title") == doc["title"], timeout=30)
    return dataset_id


def on_chain_datasheet(up: httpx.Client, dataset_id: int) -> bytes:
    """``JobMarket.datasheetOf(datasetId)``, read from the chain through the gateway's relay."""
    market = up.get("/api/config").json()["contracts"]["job_market"]
    result = rpc(up, "eth_call", [{"to": market, "data": encode_market_call("datasheetOf", [dataset_id])}, "latest"])
    return bytes.fromhex(str(result).removeprefix("0x"))


def assert_fits_width(page: Page, what: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{what} is {overflow}px wider than the screen"


@pytest.mark.parametrize(("viewport", "name", "seed"), [(DESKTOP, "desktop", 11), (PHONE, "phone", 12)], ids=["desktop", "phone"])
def test_the_provider_edits_the_datasheet_others_cannot(
    up: httpx.Client, browser: Browser, viewport: dict[str, int], name: str, seed: int
) -> None:
    base = str(up.base_url)
    doc = original_sheet(name)
    dataset_id = list_with_sheet(up, doc, seed)
    before = on_chain_datasheet(up, dataset_id)
    assert before == Datasheet.from_json(doc).hash()

    errors: list[str] = []
    published: list[str] = []
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))

    def watch(request: Request) -> None:
        if request.method == "POST" and request.url.split("?")[0].endswith("/api/datasheets"):
            published.append(request.post_data or "")

    page.on("request", watch)
    page.goto(f"{base}#/")
    use_account(page, PROVIDER)
    page.goto(f"{base}#/datasets/{dataset_id}")
    expect(page.locator("main h1")).to_have_text(doc["title"])

    # The form opens prefilled from the current datasheet; rows kept; bounds shown, not editable.
    toggle = page.locator("#datasheet-edit-toggle")
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    form = page.locator("#datasheet-form")
    expect(form.locator("#edit-title")).to_have_value(doc["title"])
    expect(form.locator("#edit-description")).to_have_value(doc["description"])
    expect(form.locator("#edit-tags")).to_have_value(f"credit, run-{RUN}")
    expect(form.locator("#edit-license")).to_have_value("CC-BY-4.0")
    expect(form.locator("#edit-provider-name")).to_have_value("Banque Étoile")
    expect(form.locator("#edit-label-name")).to_have_value("default")
    expect(form.locator("#edit-period-start")).to_have_value("2020-01-01")
    expect(form.locator("#edit-period-end")).to_have_value("2020-12-31")
    expect(form.locator("#edit-rows-kept")).to_have_text("120")
    expect(form.locator("#edit-rows")).to_have_count(0)
    expect(form.locator("[data-column]")).to_have_count(len(CREDIT_SCORING_FEATURES))
    expect(form.locator("#edit-col-desc-0")).to_have_value("age at application")
    expect(form.locator("#edit-col-unit-1")).to_have_value("EUR per year")
    expect(form.locator("#edit-col-desc-2")).to_have_value("")
    expect(form.locator("#edit-col-unit-3")).to_have_value("count")
    expect(form.locator("#edit-col-bounds-0")).to_have_text("18 to 100")
    expect(form.locator("#edit-col-bounds-1")).to_have_text("0 to 500,000")
    assert form.locator("[data-column] output").count() == len(CREDIT_SCORING_FEATURES)
    assert form.locator("[data-column] input").count() == 2 * len(CREDIT_SCORING_FEATURES), "bounds must not be editable"
    if name == "phone":
        assert_fits_width(page, "the open datasheet form")

    # A blank title: "is required" next to the field, in view; nothing published, nothing sent.
    form.locator("#edit-title").fill("   ")
    page.click("#edit-save")
    expect(page.locator("#edit-title-error")).to_contain_text("is required")
    expect(page.locator("#edit-title")).to_have_attribute("aria-invalid", "true")
    assert_in_view(page, "#edit-title-error")
    expect(page.locator("#datasheet-problems")).to_contain_text("nothing was sent")
    page.wait_for_timeout(1500)
    assert published == []
    assert on_chain_datasheet(up, dataset_id) == before
    assert page.locator("#datasheet-ok").count() == 0
    shoot(page, f"dataset-datasheet-edit-error-{name}")

    # A good edit: new title, another unit for income → published, setDatasheet, shown.
    new_title = f"Crédit révisé {name} {RUN}"
    form.locator("#edit-title").fill(new_title)
    form.locator("#edit-col-unit-1").fill("USD per year")
    page.click("#edit-save")
    expect(page.locator("#datasheet-ok")).to_contain_text("Datasheet updated", timeout=60_000)
    expect(page.locator("#edit-title-error")).to_have_count(0)  # the form closed
    assert_in_view(page, "#datasheet-ok")
    expected = copy.deepcopy(doc)
    expected["title"] = new_title
    expected["columns"][1]["unit"] = "USD per year"
    expected_hash = Datasheet.from_json(expected).hash()
    assert on_chain_datasheet(up, dataset_id) == expected_hash
    assert len(published) == 1
    assert Datasheet.from_json(json.loads(published[0])).to_json() == Datasheet.from_json(expected).to_json()
    expect(page.locator("main h1")).to_have_text(new_title)
    expect(page.locator("#datasheet-ok")).to_contain_text(new_title)
    expect(page.locator("#column-table tr[data-column=income] td")).to_have_text(["declared yearly income", "USD per year", "0 to 500,000"])
    expect(page.locator("#ds-hash")).to_contain_text(expected_hash.hex()[:6])
    detail = up.get(f"/api/datasets/{dataset_id}").json()
    assert str(detail["datasheet_hash"]).removeprefix("0x") == expected_hash.hex()
    assert detail["datasheet"]["title"] == new_title
    if name == "phone":
        assert_fits_width(page, "the dataset page after the edit")
    shoot(page, f"dataset-datasheet-edit-saved-{name}")

    # Reopened, the form holds the new document.
    page.click("#datasheet-edit-toggle")
    expect(page.locator("#edit-title")).to_have_value(new_title)
    expect(page.locator("#edit-col-unit-1")).to_have_value("USD per year")

    # Another account: the datasheet, but no edit control.
    use_account(page, OTHER)
    page.goto(f"{base}#/")
    page.goto(f"{base}#/datasets/{dataset_id}")
    expect(page.locator("main h1")).to_have_text(new_title)
    expect(page.locator("#column-table")).to_be_visible()
    expect(page.locator("#datasheet-edit-toggle")).to_be_hidden()
    expect(page.locator("#provider-panel")).to_be_hidden()
    expect(page.locator("#datasheet-form")).to_be_hidden()
    context.close()
    assert not errors, errors
