"""What a newcomer met in the marketplace (issue 19, points 4 and 5), in a real browser against
``sterling up`` on anvil, each at desktop (1280x900) and phone (390x844) width.

- The job form offers one schema's datasets at a time (two datasets of one schema and one of
  another are listed): the heading says which schema, the other schema's dataset cannot be ticked.
- It says how the enclave scales the model's inputs: clipped to the provider's declared bounds and
  scaled to [-1, 1], or, without bounds, a warning with the consumer's own standardisation.
- The model key is backed up (downloaded, or copied) and confirmed before the pay button works;
  the backup is the key the job is sealed to.
- The consumer's account shows what it spent: each job's escrow, paid out or refunded, totals.
- Another account opening the job's page gets a note, not the download controls.
- At phone width: a header at most 100 px tall, the selected account's short address in the
  selector, the job form's "eligible" column on screen, chart text at least 11 px.
- The job page's progress bar moves during a running job and is full when it settles.

Screenshots (desktop and phone) of the job form and the account page go to ``screenshots/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Browser, Page, expect

from enclave_worker.trusted import keywrap
from enclave_worker.trusted.dataset import DatasetPackage, Schema
from marketplace.contracts import EPSILON_SCALE
from marketplace.gateway_client import create_job_over_http, indexed_id, list_dataset_over_http
from tests.conftest import TOY_SCHEMA, toy_package, toy_spec, toy_terms
from tests.gateway.test_up import sterling_up, wait_until
from tests.web.test_ui_flows import PHONE, shoot, use_account

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 900}
WIDTHS = [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="phone")]
BOUNDS = [[-3, 3], [-3, 3], [-2.5, 2.5], None]
PRICE = 10**17


@dataclass(frozen=True)
class Market:
    client: httpx.Client
    base: str
    accounts: list[LocalAccount]
    plain: tuple[int, int]  # two datasets of the toy schema (no declared bounds)
    bounded: int  # one dataset of a schema that declares feature bounds
    plain_schema: str
    bounded_schema: str


def list_toy(client: httpx.Client, provider: LocalAccount, seed: int, schema: Schema, rows: int = 150) -> int:
    package = toy_package(rows, seed)
    listing = list_dataset_over_http(client, provider, DatasetPackage(features=package.features, labels=package.labels, schema=schema), toy_terms(price=PRICE))
    dataset_id = indexed_id(listing.receipt, "DatasetListed")
    wait_until(lambda: client.get(f"/api/datasets/{dataset_id}").status_code == 200, timeout=30)
    return dataset_id


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    root = tmp_path_factory.mktemp("ui-newcomer")
    with sterling_up(root / "state", root / "up.log") as (client, _):
        config = client.get("/api/config").json()
        accounts = [Account.from_key(a["private_key"]) for a in config["dev_accounts"]]
        bounded_schema = Schema(
            task="classification", feature_names=TOY_SCHEMA.feature_names, feature_shape=TOY_SCHEMA.feature_shape,
            class_names=TOY_SCHEMA.class_names, feature_bounds=tuple(None if b is None else tuple(b) for b in BOUNDS),  # type: ignore[arg-type]
        )  # fmt: skip
        plain = (list_toy(client, accounts[2], 91, TOY_SCHEMA, rows=1500), list_toy(client, accounts[2], 92, TOY_SCHEMA))
        bounded = list_toy(client, accounts[0], 93, bounded_schema)
        detail = client.get(f"/api/datasets/{bounded}").json()
        assert detail["schema"]["feature_bounds"] == BOUNDS, detail["schema"]  # the gateway keeps the declared bounds
        yield Market(
            client, str(client.base_url), accounts, plain, bounded,
            client.get(f"/api/datasets/{plain[0]}").json()["schema_hash"], detail["schema_hash"],
        )  # fmt: skip


def open_page(browser: Browser, market: Market, viewport: dict[str, int], account: int, errors: list[str], **options: Any) -> Page:
    page = browser.new_context(viewport=viewport, **options).new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{market.base}/#/")
    use_account(page, account)
    return page


def inside_viewport(page: Page, selector: str) -> None:
    """The element is laid out within the screen's width (nothing to scroll sideways for)."""
    box = page.locator(selector).bounding_box()
    width = page.viewport_size["width"] if page.viewport_size else 0
    assert box is not None, f"{selector} is not laid out"
    chain = page.locator(selector).evaluate("(e) => { const out = []; for (let n = e; n; n = n.parentElement) { const r = n.getBoundingClientRect(); out.push(`${n.tagName}#${n.id}.${n.className}:${Math.round(r.x)}+${Math.round(r.width)}`); } return out.join(' < '); }")
    assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"{selector} spans x {box['x']:.0f}..{box['x'] + box['width']:.0f} on a {width} px screen: {chain}"


def no_sideways_scroll(page: Page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = page.evaluate("() => [...document.querySelectorAll('main *')].filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5).slice(-5).map((e) => `${e.tagName}#${e.id}.${e.className}:${Math.round(e.getBoundingClientRect().right)}`)")
    assert overflow <= 0, f"the page is {overflow}px wider than the screen: {wide}"


def offered(page: Page) -> set[int]:
    return {int(v) for v in page.locator("input[name=dataset]").evaluate_all("(xs) => xs.map((x) => x.value)")}


@pytest.mark.parametrize("viewport", WIDTHS)
def test_the_job_form_offers_one_schema_and_says_how_it_scales(market: Market, browser: Browser, viewport: dict[str, int]) -> None:
    errors: list[str] = []
    page = open_page(browser, market, viewport, 1, errors)
    a, b = market.plain
    tag = "phone-" if viewport == PHONE else ""

    # Two schemas are listed and none is chosen yet: no dataset is offered, the pay button says why.
    page.goto(f"{market.base}/#/jobs/new")
    expect(page.locator(".schema-group")).to_have_count(2)
    expect(page.locator("input[name=dataset]")).to_have_count(0)
    expect(page.locator("#datasets-heading")).to_contain_text("choose a schema above first")
    expect(page.locator("#pay-reason")).to_contain_text("Choose a data schema")
    expect(page.locator("#create-submit")).to_be_disabled()

    # The plain schema: only its two datasets; the heading says which schema; a warning on scaling.
    page.check(f".schema-group[data-schema='{market.plain_schema}'] input")
    expect(page.locator("input[name=dataset]")).to_have_count(2)
    assert offered(page) == {a, b}
    expect(page.locator("#datasets-heading")).to_contain_text("4 features (x0, x1, x2, x3)")
    expect(page.locator("#datasets-heading")).to_contain_text("2 classes (neg, pos)")
    expect(page.locator("#other-schemas")).to_contain_text("1 dataset of 1 other schema cannot join this job")
    expect(page.locator("#scaling-unscaled")).to_contain_text("the enclave gives the model these features unscaled")
    expect(page.locator("#scaling-unscaled")).to_contain_text("predicting one class")
    expect(page.locator("#scaling-bounds")).to_have_count(0)
    page.check(f"#ds-{a}")
    page.check(f"#ds-{b}")
    for dataset in (a, b):
        expect(page.locator(f"[data-check='{dataset}']")).to_contain_text("eligible")
        expect(page.locator(f"[data-check='{dataset}']")).not_to_contain_text("schema")
        inside_viewport(page, f"[data-check='{dataset}']")
    # The consumer's own standardisation: its length is checked against the schema's 4 features.
    page.fill("#input-mean", "0, 0, 0")
    page.fill("#input-scale", "1, 1, 1")
    expect(page.locator("#summary")).to_contain_text("needs 4 means and 4 standard deviations")
    page.fill("#input-mean", "0, 0, 0, 0")
    page.fill("#input-scale", "1, 1, 1, 1")
    expect(page.locator("#summary")).to_contain_text("Every dataset accepts this job")
    no_sideways_scroll(page)
    shoot(page, f"{tag}create-a-job-schema-groups")

    # Arriving from the bounded dataset chooses its schema: only it is offered, with its bounds listed.
    page.goto(f"{market.base}/#/jobs/new?datasets={market.bounded}")
    expect(page.locator(f".schema-group[data-schema='{market.bounded_schema}'] input")).to_be_checked()
    expect(page.locator("input[name=dataset]")).to_have_count(1)
    assert offered(page) == {market.bounded}
    expect(page.locator(f"#ds-{market.bounded}")).to_be_checked()
    expect(page.locator(f"#ds-{a}")).to_have_count(0)
    expect(page.locator("#scaling-bounds")).to_contain_text(
        "Features are clipped to the provider's declared bounds and scaled to [-1, 1] inside the enclave"
    )
    expect(page.locator("#scaling-unscaled")).to_have_count(0)
    expect(page.locator("#bounds-table tbody tr")).to_have_count(4)
    expect(page.locator("#bounds-table tbody tr").nth(0)).to_contain_text("[-3, 3]")
    expect(page.locator("#bounds-table tbody tr").nth(2)).to_contain_text("[-2.5, 2.5]")
    expect(page.locator("#bounds-table tbody tr").nth(3)).to_contain_text("none declared")
    expect(page.locator(f"[data-check='{market.bounded}']")).to_contain_text("eligible")
    inside_viewport(page, f"[data-check='{market.bounded}']")
    no_sideways_scroll(page)
    shoot(page, f"{tag}create-a-job-bounds")

    # Arriving from a plain dataset: its schema, not the bounded one.
    page.goto(f"{market.base}/#/jobs/new?datasets={b}")
    expect(page.locator(f".schema-group[data-schema='{market.plain_schema}'] input")).to_be_checked()
    assert offered(page) == {a, b}
    page.context.close()
    assert not errors, errors


def key_of(document: dict[str, Any]) -> tuple[bytes, bytes]:
    """(private, public) of a key file, after checking the public key is the private key's."""
    private = bytes.fromhex(document["private_key"])
    public = keywrap.public_key_bytes(X25519PrivateKey.from_private_bytes(private))
    assert public.hex() == document["public_key"]
    return private, public


@pytest.mark.parametrize("viewport", WIDTHS)
def test_pay_stays_disabled_until_the_model_key_is_backed_up(market: Market, browser: Browser, viewport: dict[str, int]) -> None:
    errors: list[str] = []
    page = open_page(browser, market, viewport, 1, errors, accept_downloads=True)
    phone = viewport == PHONE
    if phone:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=market.base.rstrip("/"))
    dataset = market.plain[1]
    page.goto(f"{market.base}/#/jobs/new?datasets={dataset}")
    page.fill("#epochs", "1")
    page.fill("#hidden", "8")
    expect(page.locator(f"[data-check='{dataset}']")).to_contain_text("eligible")
    expect(page.locator("#summary")).to_contain_text("0.11 ETH")
    button = page.locator("#create-submit")
    expect(button).to_be_disabled()
    expect(page.locator("#pay-reason")).to_contain_text("Back up your model key first")
    expect(page.locator("#key-saved")).to_be_disabled()  # nothing to confirm before a backup
    public_shown = page.locator("#key-public").inner_text()

    if phone:
        page.click("#key-copy")
        expect(page.locator("#key-status")).to_contain_text("Copied to the clipboard")
        document = json.loads(page.evaluate("navigator.clipboard.readText()"))
    else:
        with page.expect_download() as download:
            page.click("#key-download")
        assert download.value.suggested_filename.startswith("sterling-key-")
        document = json.loads(Path(download.value.path()).read_text())
    assert document["job_id"] is None
    _, public = key_of(document)
    assert "0x" + public.hex() == public_shown
    expect(button).to_be_disabled()  # backed up, but not yet confirmed
    page.check("#key-saved")
    expect(button).to_be_enabled()
    expect(page.locator("#pay-reason")).to_have_text("")
    shoot(page, f"{'phone-' if phone else ''}create-a-job-key-backed-up")
    inside_viewport(page, "#create-submit")

    button.click()
    page.wait_for_selector("#job-link", timeout=60_000)
    job_id = int(str(page.get_attribute("#job-link", "href")).rsplit("/", 1)[1])
    job = market.client.get(f"/api/jobs/{job_id}").json()
    assert job["consumer_key"].lower() == "0x" + public.hex()  # the model is sealed to the key that was backed up
    # The next job from the same form gets a fresh key, to be backed up again.
    expect(page.locator("#key-saved")).not_to_be_checked()
    expect(button).to_be_disabled()
    expect(page.locator("#pay-reason")).to_contain_text("Back up your model key first")
    assert page.locator("#key-public").inner_text() != public_shown
    # Sealed to the key manager, there is no key to back up: paying is allowed at once.
    page.check("#seal-key-manager")
    expect(page.locator("#key-backup")).to_be_hidden()
    expect(button).to_be_enabled()
    page.context.close()
    assert not errors, errors


def consumer_jobs(market: Market) -> list[dict[str, Any]]:
    return list(market.client.get("/api/jobs", params={"consumer": market.accounts[1].address, "limit": 500}).json()["items"])


def eth(wei: int) -> str:
    """An amount as the page writes it (up to 6 decimals, no trailing zeros)."""
    return f"{f'{wei / 10**18:.6f}'.rstrip('0').rstrip('.')} ETH"


@pytest.fixture(scope="module")
def three_jobs(market: Market) -> list[dict[str, Any]]:
    """The consumer paid for three jobs (the two above, made in the page, and one more), all settled."""
    while (count := len(consumer_jobs(market))) < 3:
        create_job_over_http(
            market.client, market.accounts[1], dataset_ids=[market.plain[1]], spec=toy_spec(epochs=1),
            consumer_key=keywrap.public_key_bytes(X25519PrivateKey.generate()), max_total_price=PRICE, epsilon_units=EPSILON_SCALE,
        )  # fmt: skip
        wait_until(lambda: len(consumer_jobs(market)) > count, timeout=30)  # indexed before counting again

    def settled() -> list[dict[str, Any]] | None:
        jobs = consumer_jobs(market)
        return jobs if all(j["status"] == "completed" for j in jobs) else None

    return list(wait_until(settled, timeout=240))


@pytest.mark.parametrize("viewport", WIDTHS)
def test_the_consumers_account_shows_its_spending_and_escrow(market: Market, browser: Browser, three_jobs: list[dict[str, Any]], viewport: dict[str, int]) -> None:
    errors: list[str] = []
    page = open_page(browser, market, viewport, 1, errors)
    page.goto(f"{market.base}/#/account")
    rows = page.locator("#spending-table tbody tr")
    expect(rows).to_have_count(len(three_jobs), timeout=30_000)
    assert len(three_jobs) >= 3
    for job in three_jobs:
        row = page.locator(f"#spending-table tr[data-job='{job['id']}']")
        expect(row).to_contain_text(f"#{job['id']}")
        expect(row).to_contain_text("COMPLETED")
        expect(row).to_contain_text(f"paid out {eth(int(job['escrow_wei']) - int(job['refund_wei'] or 0))}")
    total = sum(int(j["escrow_wei"]) for j in three_jobs)
    expect(page.locator("#total-escrowed")).to_have_text(eth(total))
    expect(page.locator("#total-paid")).to_have_text(eth(total))
    expect(page.locator("#total-held")).to_have_text("0 ETH")
    expect(page.locator("main")).not_to_contain_text("No payments yet")
    if viewport == PHONE:
        inside_viewport(page, f"#spending-table tr[data-job='{three_jobs[0]['id']}'] td[data-label=Outcome]")
        no_sideways_scroll(page)
    shoot(page, f"{'phone-' if viewport == PHONE else ''}account-consumer-spending")

    # The provider's side of the same jobs: what it was credited, under "Credited to you".
    use_account(page, 2)
    expect(page.locator("#payments-table tbody tr").first).to_be_visible()
    expect(page.locator("#no-jobs")).to_contain_text("has not paid for a job yet")
    shoot(page, f"{'phone-' if viewport == PHONE else ''}account-provider")
    page.context.close()
    assert not errors, errors


@pytest.mark.parametrize("viewport", WIDTHS)
def test_only_the_jobs_consumer_sees_the_download_controls(market: Market, browser: Browser, three_jobs: list[dict[str, Any]], viewport: dict[str, int]) -> None:
    errors: list[str] = []
    job = three_jobs[0]
    page = open_page(browser, market, viewport, 2, errors)
    page.goto(f"{market.base}/#/jobs/{job['id']}")
    expect(page.locator("main h1")).to_contain_text("COMPLETED")
    expect(page.locator("#not-consumer")).to_contain_text("only the consumer")
    expect(page.locator("#not-consumer")).to_contain_text(job["consumer"][-6:])
    expect(page.locator("#download-model")).to_have_count(0)
    expect(page.locator("#key-file")).to_have_count(0)
    expect(page.locator("#job-scaling")).to_contain_text("unscaled")  # the plain schema, no standardisation given
    use_account(page, 1)
    expect(page.locator("#download-model")).to_be_visible()
    expect(page.locator("#not-consumer")).to_have_count(0)
    page.context.close()
    assert not errors, errors


def test_the_phone_header_account_and_chart_are_readable(market: Market, browser: Browser) -> None:
    errors: list[str] = []
    address = market.accounts[2].address
    label = f"Dev #2 {address[:4]}…{address[-4:]}"
    for viewport in (DESKTOP, PHONE):
        page = open_page(browser, market, viewport, 2, errors)
        for route in ("#/", "#/jobs/new", f"#/datasets/{market.plain[0]}", "#/account"):
            page.goto(f"{market.base}/{route}")
            expect(page.locator("main h1")).to_be_visible()
            height = page.locator("header.topbar").bounding_box()["height"]  # type: ignore[index]
            if viewport == PHONE:
                assert height <= 100, f"the header is {height:.0f} px tall on {route}"
            selected = page.locator("#account-select option:checked")
            expect(selected).to_have_text(label)
            inside_viewport(page, "#account-select")
            # The label fits the selector: its text is not cut.
            room = page.evaluate(
                """() => { const s = document.getElementById("account-select"); const c = document.createElement("canvas").getContext("2d");
                   c.font = getComputedStyle(s).font; return s.clientWidth - 24 - c.measureText(s.selectedOptions[0].text).width; }"""
            )
            assert room >= 0, f"the account selector is {-room:.0f} px too narrow for {label!r} on {route}"
            no_sideways_scroll(page)
        # Every nav link can be reached (on a phone, by scrolling the nav sideways).
        nav = page.locator("header.topbar nav")
        assert nav.evaluate("(n) => getComputedStyle(n).overflowX") in ("auto", "scroll", "visible")
        page.goto(f"{market.base}/#/account")
        expect(page.locator("[data-nav=account]")).to_have_class("active")
        inside_viewport(page, "[data-nav=account]")  # the current page's link is scrolled into view

        # The budget chart's text renders at 11 px or more.
        page.goto(f"{market.base}/#/datasets/{market.plain[0]}")
        expect(page.locator("svg.chart")).to_be_visible()
        sizes = page.locator("svg.chart text").evaluate_all(
            """(ts) => ts.map((t) => { const m = t.getScreenCTM(); return parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b); })"""
        )
        assert sizes and min(sizes) >= 11, f"chart text renders at {min(sizes):.1f} px at {viewport['width']} px wide"
        shoot(page, f"{'phone-' if viewport == PHONE else ''}dataset-chart")
        page.context.close()
    assert not errors, errors


RECORD_PROGRESS = """() => {
  window.__progress = [];
  const seen = () => {
    const bar = document.getElementById("job-progress");
    const state = bar ? `${bar.classList.contains("indeterminate") ? "indeterminate" : bar.getAttribute("aria-valuenow")}|${bar.classList.contains("running") ? "running" : "done"}|${getComputedStyle(bar.firstElementChild).animationName}` : "none";
    if (window.__progress[window.__progress.length - 1] !== state) window.__progress.push(state);
  };
  seen();
  new MutationObserver(seen).observe(document.getElementById("view"), { subtree: true, childList: true, attributes: true });
  setInterval(seen, 50);
}"""


@pytest.mark.parametrize("viewport", WIDTHS)
def test_the_progress_bar_moves_while_the_job_runs(market: Market, browser: Browser, viewport: dict[str, int]) -> None:
    errors: list[str] = []
    page = open_page(browser, market, viewport, 1, errors)
    # A longer job first: the worker takes jobs one after another, so the watched job is seen
    # waiting for its claim (indeterminate), then trained epoch by epoch (part-filled) and settled
    # (full). The page shows the latest report the gateway's event feed read (about once a
    # second), so the watched job trains for long enough (200 epochs, several seconds) to be seen
    # part-way.
    create_job_over_http(
        market.client, market.accounts[0], dataset_ids=[market.plain[0]], spec=toy_spec(epochs=200, batch_size=16),
        consumer_key=keywrap.public_key_bytes(X25519PrivateKey.generate()), max_total_price=PRICE, epsilon_units=EPSILON_SCALE,
    )  # fmt: skip
    private = X25519PrivateKey.generate()
    receipt = create_job_over_http(
        market.client, market.accounts[1], dataset_ids=[market.plain[0]], spec=toy_spec(epochs=200, batch_size=16),
        consumer_key=keywrap.public_key_bytes(private), max_total_price=PRICE, epsilon_units=EPSILON_SCALE,
    )  # fmt: skip
    job_id = indexed_id(receipt, "JobCreated")
    wait_until(lambda: market.client.get(f"/api/jobs/{job_id}").status_code == 200, timeout=30)
    page.goto(f"{market.base}/#/jobs/{job_id}")
    expect(page.locator("#job-progress")).to_be_visible()
    page.evaluate(RECORD_PROGRESS)
    page.wait_for_selector("li.done[data-stage=settled]", timeout=180_000)
    expect(page.locator("#job-progress")).to_have_attribute("aria-valuenow", "100")
    page.wait_for_timeout(200)
    states: list[str] = page.evaluate("window.__progress")
    running = [s for s in states if "|running|" in s]
    assert running, states
    # While it ran the bar was alive: animated, and either indeterminate or part-filled.
    for state in running:
        value, _, animation = state.split("|")
        assert value == "indeterminate" or 0 < int(value) < 100, states
        assert "progress-stripes" in animation, states
    # It moved: more than one state while running (waiting for a claim, preparing, training by epoch …), then full and still.
    assert len({s.split("|")[0] for s in running}) >= 2, states
    values = [int(s.split("|")[0]) for s in running if s.split("|")[0] != "indeterminate"]
    assert values and values == sorted(values), states  # training by epoch: part-filled, never going back
    assert states[-1].startswith("100|done|"), states
    assert "progress-stripes" not in states[-1], states
    expect(page.locator("#job-progress-label")).to_contain_text("Settled")
    page.context.close()
    assert not errors, errors
