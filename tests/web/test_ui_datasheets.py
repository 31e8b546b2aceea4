"""Datasheets in a real browser against ``sterling up`` on anvil (issue 19): a listing page that
checks the file when it is chosen, shows every error next to its control and in view, warns before
listing the same file twice and fills its progress bar; listings told apart on the marketplace by
their datasheets (cards, search box, tag chips, schema filter, sorting, paging, all in the URL);
the detail page's datasheet and column table with the provider's declared bounds.

Desktop (1280x900) and phone (390x844) widths; screenshots to ``screenshots/``. One ``sterling up``
for the module; datasets the marketplace tests need are listed over HTTP (the form is tested on its own).
"""

from __future__ import annotations

import csv
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Browser, Page, expect

from enclave_worker.trusted.dataset import canonical_json
from marketplace.datasets import CREDIT_SCORING_BOUNDS, CREDIT_SCORING_FEATURES, credit_scoring
from marketplace.datasheet import Datasheet
from marketplace.gateway_client import indexed_id, list_dataset_over_http
from tests.conftest import toy_package, toy_terms
from tests.gateway.test_up import sterling_up, wait_until
from tests.web.test_ui_flows import shoot, use_account

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
WIDTHS = [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="phone")]
HEADER = [*CREDIT_SCORING_FEATURES, "default"]
RUN = secrets.token_hex(3)
"""Words and tags unique to this run, so searches find this module's datasets only."""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("datasheets-up")
    with sterling_up(root / "state", root / "up.log") as (client, _):
        yield client


def credit_rows(seed: int, rows: int = 300) -> list[list[str]]:
    """A new user's credit-scoring table: age, income, debt ratio, late payments and the default label (0/1)."""
    package = credit_scoring(rows, seed)
    out = []
    for x, y in zip(package.features.tolist(), package.labels.tolist(), strict=True):
        out.append([f"{x[0]:.0f}", f"{x[1]:.0f}", f"{x[2]:.3f}", f"{x[3]:.0f}", str(y)])
    return out


def write_csv(path: Path, rows: list[list[str]], delimiter: str) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("credit")
    decimal_comma = [[*r[:2], r[2].replace(".", ","), *r[3:]] for r in credit_rows(3)]
    return {
        "semicolon": write_csv(folder / "credit-semicolon.csv", credit_rows(1), ";"),
        "comma": write_csv(folder / "credit.csv", credit_rows(2), ","),
        "decimal-comma": write_csv(folder / "credit-eu.csv", decimal_comma, ";"),
        "tab": write_csv(folder / "credit.tsv", credit_rows(4, rows=40), "\t"),
    }


def new_page(browser: Browser, viewport: dict[str, int], errors: list[str]) -> Page:
    page = browser.new_context(viewport=viewport).new_page()  # type: ignore[arg-type]
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page


def assert_in_view(page: Page, selector: str) -> None:
    """The element is visible and wholly inside the viewport (the click scrolled it there)."""
    locator = page.locator(selector)
    expect(locator).to_be_visible()
    page.wait_for_timeout(100)  # let the scroll settle
    box = locator.bounding_box()
    height = page.viewport_size["height"] if page.viewport_size else 0
    assert box is not None and box["height"] > 0, selector
    assert box["y"] >= 0 and box["y"] + box["height"] <= height, (
        f"{selector} at y={box['y']:.0f}..{box['y'] + box['height']:.0f}, viewport {height}"
    )


def scroll_to_bottom_and_submit(page: Page) -> None:
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.click("#list-submit")


def bar_is_full(page: Page) -> bool:
    return bool(page.evaluate("(() => { const b = document.querySelector('#bar'); return b.value === b.max && b.max > 0; })()"))


def provider_datasets(up: httpx.Client, address: str) -> list[dict[str, Any]]:
    return list(
        up.get("/api/datasets", params={"provider": address, "limit": 100, "status": ["active", "paused", "delisted"]}).json()["items"]
    )


def fill_datasheet(page: Page, *, title: str, tags: str) -> None:
    page.fill("#ds-title", title)
    page.fill("#ds-description", f"Borrowers of a small lender, one row per loan decision ({RUN}).\nCollected at application time.")
    page.fill("#ds-tags", tags)
    page.fill("#ds-license", "CC-BY-4.0")
    page.fill("#ds-provider-name", "Banque Étoile")
    page.fill("#ds-provenance", "Exported from the loan book, identifiers removed.")
    page.fill("#ds-intended-uses", "Credit-risk models; not for decisions about individuals.")
    page.fill("#ds-period-start", "2021-01-01")
    page.fill("#ds-period-end", "2023-12-31")
    page.fill("#ds-label-description", "1 if the borrower defaulted within 12 months")


def declare_bounds(page: Page) -> None:
    units = {"age": "years", "income": "EUR per year", "debt_ratio": "debt over income", "late_payments": "count"}
    for i, name in enumerate(CREDIT_SCORING_FEATURES):
        page.fill(f"#col-desc-{i}", f"the borrower's {name.replace('_', ' ')}")
        page.fill(f"#col-unit-{i}", units[name])
        low, high = CREDIT_SCORING_BOUNDS[name]
        page.fill(f"#col-min-{i}", str(low))
        page.fill(f"#col-max-{i}", str(high))


# --- the listing page checks the file when it is chosen ---------------------------------------------


@pytest.mark.parametrize("viewport", WIDTHS)
def test_the_file_is_checked_when_chosen_and_errors_show_next_to_their_control_in_view(
    up: httpx.Client, browser: Browser, files: dict[str, Path], viewport: dict[str, int]
) -> None:
    errors: list[str] = []
    page = new_page(browser, viewport, errors)
    page.goto(f"{up.base_url}#/list")
    use_account(page, 2)
    page.wait_for_selector("#file")
    width = "phone" if viewport is PHONE else "desktop"

    # A semicolon-separated file is named as such, with its counts and a preview, before any click.
    page.set_input_files("#file", files["semicolon"])
    expect(page.locator("#csv-format")).to_have_text("semicolon-separated")
    expect(page.locator("#csv-rows")).to_have_attribute("data-rows", "300")
    expect(page.locator("#csv-rows")).to_have_text("300 rows")
    expect(page.locator("#csv-columns")).to_have_attribute("data-columns", "5")
    expect(page.locator("#csv-preview thead th")).to_have_count(5)
    expect(page.locator("#csv-preview tbody tr")).to_have_count(5)
    first = credit_rows(1)[0]
    expect(page.locator("#csv-preview tbody tr").first.locator("td")).to_have_text(first)
    expect(page.locator("#label-column option")).to_have_text(HEADER)
    expect(page.locator("#label-column")).to_have_value("default")
    expect(page.locator("#file-error")).to_have_text("")
    assert page.locator("#progress-panel").is_hidden()
    # One row per feature, its bounds empty: declared by the provider, never filled from the data.
    expect(page.locator("#columns-table [data-column]")).to_have_count(4)
    for i in range(4):
        expect(page.locator(f"#col-min-{i}")).to_have_value("")
        expect(page.locator(f"#col-max-{i}")).to_have_value("")
    # Bounds narrower than the data: a local warning of how many rows will be clipped (ages run 20-80).
    page.fill("#col-min-0", "30")
    page.fill("#col-max-0", "60")
    ages = np.array([float(r[0]) for r in credit_rows(1)])
    outside = int(((ages < 30) | (ages > 60)).sum())
    assert outside > 0
    expect(page.locator("#col-note-0")).to_have_text(f"{outside} rows fall outside these bounds and will be clipped.")
    page.fill("#col-max-0", "20")
    expect(page.locator("#col-note-0")).to_contain_text("is not below the upper bound 20")
    expect(page.locator("#col-max-0")).to_have_attribute("aria-invalid", "true")
    page.fill("#col-min-0", "")
    page.fill("#col-max-0", "")
    expect(page.locator("#col-note-0")).to_have_text("")
    shoot(page, f"list-preview-{width}")

    # A tab-separated file, and a different label: the features follow.
    page.set_input_files("#file", files["tab"])
    expect(page.locator("#csv-format")).to_have_text("tab-separated")
    expect(page.locator("#csv-rows")).to_have_attribute("data-rows", "40")
    page.select_option("#label-column", "late_payments")
    expect(page.locator("#columns-table [data-column]")).to_have_count(4)
    columns = page.locator("#columns-table [data-column]").evaluate_all("rows => rows.map((r) => r.dataset.column)")
    assert columns == ["age", "income", "debt_ratio", "default"]

    # A file with decimal commas: refused when chosen, next to the file control, saying why.
    page.set_input_files("#file", files["decimal-comma"])
    expect(page.locator("#csv-format")).to_have_text("semicolon-separated")
    expect(page.locator("#file-error")).to_contain_text('column "debt_ratio"')
    expect(page.locator("#file-error")).to_contain_text("this file writes decimals with a comma")
    expect(page.locator("#file")).to_have_attribute("aria-invalid", "true")
    assert "file-error" in str(page.get_attribute("#file", "aria-describedby")).split()
    expect(page.locator("#file-error")).to_have_attribute("role", "alert")
    # Clicked from the bottom of the page: the error is scrolled into view, nothing is encrypted.
    scroll_to_bottom_and_submit(page)
    assert_in_view(page, "#file-error")
    expect(page.locator("#outcome .error-box")).to_contain_text("Nothing was encrypted or sent.")
    expect(page.locator("[data-step=package]")).to_have_class("failed")
    assert not page.get_attribute("[data-step=encrypt]", "class")
    shoot(page, f"list-file-error-{width}")

    # A datasheet begun but incomplete: each problem next to its field, the first one in view.
    page.set_input_files("#file", files["semicolon"])
    expect(page.locator("#file-error")).to_have_text("")
    page.fill("#ds-title", "Crédit")
    page.fill("#ds-tags", "credit, Not a tag!")
    scroll_to_bottom_and_submit(page)
    expect(page.locator("#ds-description-error")).to_have_text("is required.")
    expect(page.locator("#ds-license-error")).to_have_text("is required.")
    expect(page.locator("#ds-tags-error")).to_contain_text("a tag is lower-case letters")
    expect(page.locator("#ds-description")).to_have_attribute("aria-invalid", "true")
    assert "ds-description-error" in str(page.get_attribute("#ds-description", "aria-describedby")).split()
    assert_in_view(page, "#ds-description-error")
    assert page.evaluate("document.activeElement.id") == "ds-description"
    expect(page.locator("#outcome")).to_have_text("")  # nothing was started

    # Terms that contradict each other: said next to them, in view.
    fill_datasheet(page, title="Crédit", tags="credit")
    page.fill("#max-eps", "20")
    page.evaluate("window.scrollTo(0, 0)")
    page.click("#list-submit")
    expect(page.locator("#terms-error")).to_contain_text("cannot exceed the total")
    assert_in_view(page, "#terms-error")
    page.context.close()
    assert not errors, errors


def test_the_gateways_datasheet_problems_show_next_to_the_fields_they_name(
    up: httpx.Client, browser: Browser, files: dict[str, Path]
) -> None:
    errors: list[str] = []
    page = new_page(browser, DESKTOP, errors)
    problems = [
        {"path": "columns.0.unit", "message": "String should have at most 40 characters"},
        {"path": "provider_name", "message": "must not be blank"},
        {"path": "version", "message": "must be 1"},
    ]
    page.route(
        "**/api/datasheets", lambda route: route.fulfill(status=422, json={"detail": "the datasheet is not valid", "problems": problems})
    )
    page.goto(f"{up.base_url}#/list")
    use_account(page, 2)
    page.set_input_files("#file", files["comma"])
    expect(page.locator("#csv-format")).to_have_text("comma-separated")
    fill_datasheet(page, title="Refused", tags="credit")
    page.fill("#col-unit-0", "years")
    scroll_to_bottom_and_submit(page)
    expect(page.locator("#col-note-0")).to_have_text("String should have at most 40 characters.")
    expect(page.locator("#col-unit-0")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#ds-provider-name-error")).to_have_text("must not be blank.")
    expect(page.locator("#datasheet-error")).to_have_text("version: must be 1.")
    expect(page.locator("#outcome .error-box")).to_contain_text("The gateway refused the datasheet")
    expect(page.locator("[data-step=datasheet]")).to_have_class("failed")
    assert not page.get_attribute("[data-step=encrypt]", "class")  # nothing was encrypted
    assert_in_view(page, "#col-note-0")
    expect(page.locator("#list-submit")).to_be_enabled()
    page.context.close()
    assert not errors, errors


# --- listing from the form: datasheet, bounds, progress, the second listing of one file -----------


def test_list_with_a_datasheet_then_the_same_file_asks_first_desktop(up: httpx.Client, browser: Browser, files: dict[str, Path]) -> None:
    config = up.get("/api/config").json()
    provider = config["dev_accounts"][0]["address"]
    errors: list[str] = []
    page = new_page(browser, DESKTOP, errors)
    page.goto(f"{up.base_url}#/list")
    use_account(page, 0)
    page.set_input_files("#file", files["semicolon"])
    expect(page.locator("#csv-format")).to_have_text("semicolon-separated")
    title = f"Crédit défauts 😀 {RUN}"
    fill_datasheet(page, title=title, tags=f"credit, finance, form-{RUN}")
    declare_bounds(page)
    expect(page.locator("#col-note-0")).to_have_text("")  # no age outside 18..100
    page.fill("#price", "0.2")
    shoot(page, "list-datasheet-form-desktop")
    scroll_to_bottom_and_submit(page)
    page.wait_for_selector("#listed-ok", timeout=120_000)
    assert_in_view(page, "#listed-ok")
    assert bar_is_full(page)
    expect(page.locator("#bar-text")).to_have_text("100 %")
    for step in ("package", "datasheet", "schema", "encrypt", "upload", "deposit", "list", "datasheet-tx"):
        expect(page.locator(f"[data-step={step}]")).to_have_class("done")
    expect(page.locator("#list-submit")).to_be_disabled()
    shoot(page, "list-datasheet-done-desktop")

    dataset_id = int(str(page.get_attribute("#listed-link", "href")).rsplit("/", 1)[1])
    detail = up.get(f"/api/datasets/{dataset_id}").json()
    sheet = detail["datasheet"]
    assert sheet is not None and sheet["title"] == title and sheet["rows"] == 300
    assert sheet["label"] == {"name": "default", "description": "1 if the borrower defaulted within 12 months"}
    assert sheet["tags"] == ["credit", "finance", f"form-{RUN}"] and sheet["provider_name"] == "Banque Étoile"
    assert sheet["collection_period"] == {"start": "2021-01-01", "end": "2023-12-31"}
    assert [c["unit"] for c in sheet["columns"]] == ["years", "EUR per year", "debt over income", "count"]
    # The browser's canonical JSON is Python's (é and the emoji as \\u escapes): same hash on-chain.
    assert detail["datasheet_hash"].removeprefix("0x") == Datasheet.from_json(sheet).hash().hex()
    assert b"\\u00e9" in canonical_json(sheet) and b"\\ud83d\\ude00" in canonical_json(sheet)
    assert detail["schema"]["feature_bounds"] == [list(CREDIT_SCORING_BOUNDS[n]) for n in CREDIT_SCORING_FEATURES]
    assert detail["schema"]["class_names"] == ["0", "1"]
    listed = len(provider_datasets(up, provider))

    # The same file again: a warning, in view, and nothing listed until it is confirmed.
    page.fill("#price", "0.3")
    expect(page.locator("#list-submit")).to_be_enabled()
    scroll_to_bottom_and_submit(page)
    expect(page.locator("#duplicate-warning")).to_be_visible()
    expect(page.locator("#duplicate-text")).to_contain_text(f"as dataset #{dataset_id}")
    assert_in_view(page, "#duplicate-warning")
    shoot(page, "list-duplicate-warning-desktop")
    page.click("#duplicate-cancel")
    expect(page.locator("#duplicate-warning")).to_be_hidden()
    page.wait_for_timeout(1000)
    assert len(provider_datasets(up, provider)) == listed
    page.context.close()
    assert not errors, errors


def test_list_on_a_phone_and_confirm_a_second_listing_of_the_same_file(up: httpx.Client, browser: Browser, files: dict[str, Path]) -> None:
    config = up.get("/api/config").json()
    provider = config["dev_accounts"][1]["address"]
    errors: list[str] = []
    page = new_page(browser, PHONE, errors)
    page.goto(f"{up.base_url}#/list")
    use_account(page, 1)
    page.set_input_files("#file", files["comma"])
    expect(page.locator("#csv-format")).to_have_text("comma-separated")
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the listing form is {overflow}px wider than a phone"
    fill_datasheet(page, title=f"Phone crédit {RUN}", tags=f"phone-{RUN}")
    scroll_to_bottom_and_submit(page)
    page.wait_for_selector("#listed-ok", timeout=120_000)
    assert_in_view(page, "#listed-ok")
    assert bar_is_full(page)
    expect(page.locator("#list-submit")).to_be_disabled()
    shoot(page, "list-datasheet-done-phone")
    first = int(str(page.get_attribute("#listed-link", "href")).rsplit("/", 1)[1])

    # Clicking again needs a change, then a confirmation: then it lists a second dataset.
    page.fill("#price", "0.15")
    scroll_to_bottom_and_submit(page)
    assert_in_view(page, "#duplicate-warning")
    expect(page.locator("#listed-ok")).to_have_count(1)  # the earlier result, nothing new yet
    shoot(page, "list-duplicate-warning-phone")
    page.click("#duplicate-confirm")
    expect(page.locator("#duplicate-warning")).to_be_hidden()
    expect(page.locator("#listed-link")).to_have_attribute("href", re.compile(rf"^#/datasets/(?!{first}$)\d+$"), timeout=120_000)
    assert_in_view(page, "#listed-ok")
    assert bar_is_full(page)
    second = int(str(page.get_attribute("#listed-link", "href")).rsplit("/", 1)[1])
    assert second != first
    ids = {d["id"] for d in provider_datasets(up, provider)}
    assert {first, second} <= ids and len(ids) == 2
    assert up.get(f"/api/datasets/{second}").json()["price_wei"] == str(15 * 10**16)
    page.context.close()
    assert not errors, errors


# --- the marketplace: cards, search, tags, schema filter, sorting, paging; the detail page -----------


def list_with_datasheet(up: httpx.Client, provider: LocalAccount, package: Any, datasheet: dict[str, Any] | None) -> int:
    """A dataset listed over HTTP as the browser does, its datasheet (if any) published and set on-chain; its indexed id."""
    sheet = Datasheet.from_json(datasheet) if datasheet is not None else None
    listing = list_dataset_over_http(up, provider, package, toy_terms(), datasheet=sheet)
    dataset_id = indexed_id(listing.receipt, "DatasetListed")
    if datasheet is not None:
        wait_until(
            lambda: (up.get(f"/api/datasets/{dataset_id}").json().get("datasheet") or {}).get("title") == datasheet["title"], timeout=30
        )
    else:
        wait_until(lambda: up.get(f"/api/datasets/{dataset_id}").status_code == 200, timeout=30)
    return dataset_id


def sheet(title: str, description: str, tags: list[str], *, rows: int, label: str, **more: Any) -> dict[str, Any]:
    return {"version": 1, "title": title, "description": description, "tags": tags, "license": "CC-BY-4.0",
            "provider_name": "Clinique Hélène", "rows": rows, "label": {"name": label}, **more}  # fmt: skip


@pytest.fixture(scope="module")
def catalogue(up: httpx.Client) -> dict[str, Any]:
    """Three datasets sharing this run's tag (one of them the credit table with declared bounds) and one without a datasheet."""
    provider = Account.from_key(up.get("/api/config").json()["dev_accounts"][2]["private_key"])
    tag = f"run-{RUN}"
    credit = credit_scoring(300, 7, declare_bounds=True)
    credit_sheet = sheet(
        f"Alpha crédit {RUN} 😀", f"Loans and defaults zebra{RUN}.\nSecond line.", ["credit", tag], rows=300, label="default",
        columns=[{"name": "age", "description": "age at application", "unit": "years"}, {"name": "income", "unit": "EUR per year"}],
        provenance="A lender's book.", intended_uses="Credit-risk research.",
        collection_period={"start": "2020-01-01", "end": "2020-12-31"},
    )  # fmt: skip
    ids = {
        "credit": list_with_datasheet(up, provider, credit, credit_sheet),
        "beta": list_with_datasheet(
            up, provider, toy_package(120, 1), sheet(f"Beta clinic {RUN}", "Outpatients.", [tag, "health"], rows=120, label="outcome")
        ),
        "gamma": list_with_datasheet(
            up, provider, toy_package(90, 2), sheet(f"Gamma sensors {RUN}", "Readings.", [tag], rows=90, label="fault")
        ),
        "bare": list_with_datasheet(up, provider, toy_package(60, 3), None),
    }
    return {
        "ids": ids,
        "tag": tag,
        "credit_sheet": credit_sheet,
        "toy_schema": up.get(f"/api/datasets/{ids['bare']}").json()["schema_hash"],
    }


def cards(page: Page) -> Any:
    return page.locator("#results [data-dataset-id]")


def test_marketplace_cards_search_tags_paging_and_detail(up: httpx.Client, browser: Browser, catalogue: dict[str, Any]) -> None:
    ids, tag = catalogue["ids"], catalogue["tag"]
    errors: list[str] = []
    page = new_page(browser, DESKTOP, errors)
    base = str(up.base_url)
    page.goto(f"{base}#/")

    # Cards say what a dataset is: title, provider, rows, label, tags, a line of description.
    card = page.locator(f"[data-dataset-id='{ids['credit']}']")
    expect(card.locator(".card-title")).to_have_text(f"Alpha crédit {RUN} 😀")
    expect(card.locator(".card-provider")).to_have_text("Clinique Hélène")
    expect(card.locator(".card-rows")).to_have_text("300 rows")
    expect(card.locator(".card-label")).to_have_text("label: default")
    expect(card.locator(".summary")).to_have_text(f"Loans and defaults zebra{RUN}.")
    expect(card.locator(".card-tags [data-tag]")).to_have_text(["credit", tag])
    expect(card).to_contain_text("remaining 10.000")
    expect(page.locator(f"[data-dataset-id='{ids['bare']}'] .card-title")).to_have_text(f"Dataset #{ids['bare']}")
    shoot(page, "marketplace-datasheets-desktop")

    # The search box finds a word of the description; a word nobody wrote finds nothing.
    page.fill("#search", f"zebra{RUN}")
    expect(cards(page)).to_have_count(1)
    expect(cards(page).first).to_have_attribute("data-dataset-id", str(ids["credit"]))
    assert f"q=zebra{RUN}" in page.evaluate("location.hash")
    page.fill("#search", f"nomatch{RUN}")
    expect(page.locator("#no-results")).to_be_visible()
    expect(cards(page)).to_have_count(0)
    page.click("#clear-search")
    expect(page.locator("#search")).to_have_value("")
    expect(page.locator(f"[data-dataset-id='{ids['bare']}']")).to_be_visible()

    # A tag chip filters to the datasets carrying it; the state is in the address, so it can be shared.
    page.click(f"#tag-chips [data-tag='{tag}']")
    expect(cards(page)).to_have_count(3)
    expect(page.locator(f"#tag-chips [data-tag='{tag}']")).to_have_attribute("aria-pressed", "true")
    assert f"tag={tag}" in page.evaluate("location.hash")
    page.select_option("#sort", "title")
    expect(cards(page).locator(".card-title")).to_have_text([f"Alpha crédit {RUN} 😀", f"Beta clinic {RUN}", f"Gamma sensors {RUN}"])
    shared = page.evaluate("location.href")
    other = new_page(browser, DESKTOP, errors)
    other.goto(shared)
    expect(cards(other).locator(".card-title")).to_have_text([f"Alpha crédit {RUN} 😀", f"Beta clinic {RUN}", f"Gamma sensors {RUN}"])
    expect(other.locator("#sort")).to_have_value("title")
    other.context.close()
    page.select_option("#sort", "-rows")
    expect(cards(page).locator(".card-rows")).to_have_text(["300 rows", "120 rows", "90 rows"])

    # Paging: two per page.
    page.goto(f"{base}#/?tag={tag}&sort=title&per=2")
    expect(page.locator("#page-range")).to_have_text("1–2 of 3")
    expect(cards(page).locator(".card-title")).to_have_text([f"Alpha crédit {RUN} 😀", f"Beta clinic {RUN}"])
    expect(page.locator("#prev-page")).to_be_disabled()
    page.click("#next-page")
    expect(page.locator("#page-range")).to_have_text("3–3 of 3")
    expect(cards(page).locator(".card-title")).to_have_text([f"Gamma sensors {RUN}"])
    expect(page.locator("#next-page")).to_be_disabled()
    assert "page=2" in page.evaluate("location.hash")
    page.click("#prev-page")
    expect(page.locator("#page-range")).to_have_text("1–2 of 3")

    # The schema filter: the toy schema's datasets, the one without a datasheet among them.
    page.goto(f"{base}#/?schema_hash={catalogue['toy_schema'].removeprefix('0x')}&per=96")
    expect(page.locator(f"[data-dataset-id='{ids['bare']}']")).to_be_visible()
    expect(page.locator(f"[data-dataset-id='{ids['credit']}']")).to_have_count(0)

    # The detail page: the whole datasheet and the columns with the declared bounds.
    page.goto(f"{base}#/datasets/{ids['credit']}")
    expect(page.locator("main h1")).to_have_text(f"Alpha crédit {RUN} 😀")
    panel = page.locator("#datasheet-panel")
    expect(panel.locator("#ds-description")).to_have_text(f"Loans and defaults zebra{RUN}.\nSecond line.")
    expect(panel.locator("#ds-license")).to_have_text("CC-BY-4.0")
    expect(panel.locator("#ds-provider")).to_contain_text("Clinique Hélène")
    expect(panel.locator("#ds-provenance")).to_have_text("A lender's book.")
    expect(panel.locator("#ds-intended-uses")).to_have_text("Credit-risk research.")
    expect(panel.locator("#ds-period")).to_have_text("2020-01-01 to 2020-12-31")
    rows = page.locator("#column-table tbody tr")
    expect(rows).to_have_count(5)
    expect(page.locator("#column-table tr[data-column=age] td")).to_have_text(["age at application", "years", "18 to 100"])
    expect(page.locator("#column-table tr[data-column=income] td")).to_have_text(["", "EUR per year", "0 to 500,000"])
    expect(page.locator("#column-table tr[data-column=debt_ratio] td").nth(2)).to_have_text("0 to 2")
    expect(page.locator("#column-table tr.label-row")).to_contain_text("default")
    expect(page.locator("#column-table tr.label-row")).to_contain_text("classes: repaid, default")
    shoot(page, "dataset-datasheet-desktop")
    page.goto(f"{base}#/datasets/{ids['bare']}")
    expect(page.locator("main h1")).to_have_text(f"Dataset #{ids['bare']}")
    expect(page.locator("#no-datasheet")).to_be_visible()
    expect(page.locator("#column-table tr[data-column=x0] td").nth(2)).to_have_text("none declared")

    # On a phone: the same cards, nothing wider than the screen.
    page.set_viewport_size(PHONE)
    for route, name in [
        (f"#/?tag={tag}&sort=title", "marketplace-datasheets-phone"),
        (f"#/datasets/{ids['credit']}", "dataset-datasheet-phone"),
    ]:
        page.goto(f"{base}{route}")
        expect(page.locator("main h1")).to_be_visible()
        if "tag" in route:
            expect(cards(page)).to_have_count(3)
            expect(cards(page).first.locator(".card-rows")).to_have_text("300 rows")
        else:
            expect(page.locator("#column-table")).to_be_visible()
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{route} is {overflow}px wider than a phone screen"
        shoot(page, name)
    page.context.close()
    assert not errors, errors


def test_the_browsers_datasheet_hash_is_pythons_for_non_ascii_titles(up: httpx.Client, page: Page) -> None:
    """Canonical JSON with ensure_ascii: é, a CJK character and an emoji as \\u escapes, keys sorted by code point."""
    doc = sheet("Crédit 😀 信用", "Zürich — ½ «test»\n\ttabbed", ["credit"], rows=12, label="défaut",
                columns=[{"name": "âge", "description": "en années", "unit": "ans"}], provenance="\u007f\u0001")  # fmt: skip
    page.goto(f"{up.base_url}#/")
    out = page.evaluate(
        """async (doc) => {
          const flow = await import('/js/listing-flow.js');
          const { canonicalJson } = await import('/js/crypto/package.js');
          return { json: canonicalJson(doc), hash: await flow.datasheetHash(doc), problems: flow.datasheetProblems(doc) };
        }""",
        doc,
    )
    assert out["json"].encode() == canonical_json(doc)
    assert out["hash"] == Datasheet.from_json(doc).hash().hex()
    assert out["problems"] == []
    published = up.post("/api/datasheets", content=out["json"].encode(), headers={"content-type": "application/json"})
    assert published.status_code == 201 and published.json()["sha256"] == out["hash"]
