"""Every marketplace flow in a real browser against ``sterling up`` on anvil.

A provider lists a dataset from the browser (the CSV is packaged and encrypted in the page), a
consumer creates a job, watches it settle, downloads and decrypts the model in the page, and the
provider withdraws. A provider pauses, resumes, tops up and reprices a dataset from its page while
the consumer's job form follows (and refuses to pay a price that rose); a consumer cancels an
open job and finds the refund in their account. Screenshots of every page (desktop and phone
widths) go to ``screenshots/``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Browser, Page, expect
from safetensors.numpy import load as load_safetensors
from safetensors.torch import load as load_torch_tensors
from sklearn.datasets import load_breast_cancer

from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.models import ModelSpec, build_model
from marketplace import datasets
from marketplace.contracts import EPSILON_SCALE
from marketplace.gateway_client import (
    encode_market_call,
    indexed_id,
    list_dataset_over_http,
    rpc,
    send_transaction,
)
from marketplace.model_card import schema_of_card
from marketplace.model_metrics import evaluate
from marketplace.tables import read_table
from tests.conftest import toy_package, toy_terms
from tests.gateway.test_up import sterling_up, wait_until
from tests.web.conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.slow]

PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("ui-up")
    with sterling_up(root / "state", root / "up.log") as (client, _):
        yield client


@pytest.fixture(scope="module")
def hospital_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 rows of breast cancer with named columns and a text label, as a data officer would export it."""
    data = load_breast_cancer()
    path = tmp_path_factory.mktemp("csv") / "hospital.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*data.feature_names, "diagnosis"])
        for x, y in zip(data.data[:400], data.target[:400], strict=True):
            writer.writerow([f"{v:.6g}" for v in x] + [data.target_names[y]])
    return path


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def back_up_key(page: Page) -> None:
    """The job form's required step before paying for a model sealed to this browser's key: the key file saved, then confirmed."""
    with page.expect_download():
        page.click("#key-download")
    page.check("#key-saved")


def describe_dataset(page: Page, title: str) -> None:
    """The listing form's required datasheet fields (docs/datasheets.md)."""
    page.fill("#ds-title", title)
    page.fill("#ds-description", f"{title}: biopsies of breast masses, one row per biopsy.")
    page.fill("#ds-license", "CC-BY-4.0")
    page.fill("#ds-provider-name", "St. Mary's")


def use_account(page: Page, index: int) -> str:
    page.select_option("#account-select", f"dev:{index}")
    return page.locator("#account-select").input_value()


def test_list_train_settle_decrypt_withdraw_in_the_browser(up: httpx.Client, browser: Browser, hospital_csv: Path) -> None:
    base = str(up.base_url)
    config = up.get("/api/config").json()
    provider, consumer = config["dev_accounts"][0]["address"], config["dev_accounts"][1]["address"]
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # The provider lists a dataset: packaged and encrypted in the page.
    page.goto(f"{base}/#/list")
    use_account(page, 0)
    page.wait_for_selector("#file")
    page.set_input_files("#file", hospital_csv)
    expect(page.locator("#label-column")).to_be_enabled()
    page.select_option("#label-column", "diagnosis")
    describe_dataset(page, "Breast-cancer biopsies")
    page.fill("#price", "0.5")
    shoot(page, "list-a-dataset")
    page.click("#list-submit")
    page.wait_for_selector("#listed-link", timeout=90_000)
    assert page.locator("[data-step=list]").get_attribute("class") == "done"
    shoot(page, "list-a-dataset-done")
    dataset_id = int(str(page.get_attribute("#listed-link", "href")).rsplit("/", 1)[1])
    dataset = up.get(f"/api/datasets/{dataset_id}").json()
    assert dataset["provider"] == provider and dataset["price_wei"] == str(5 * 10**17)
    assert dataset["datasheet"]["title"] == "Breast-cancer biopsies" and dataset["datasheet"]["rows"] == 400
    assert dataset["schema"]["class_names"] == ["benign", "malignant"] and len(dataset["schema"]["feature_names"]) == 30
    stored = up.get(f"/api/blobs/{dataset['content_hash'][2:]}").content
    assert stored[:4] == b"STRL" and hashlib.sha256(stored).hexdigest() == dataset["content_hash"][2:]
    assert b"mean radius" not in stored and hospital_csv.read_bytes()[:200] not in stored

    page.click("#listed-link")
    expect(page.locator("h1")).to_have_text("Breast-cancer biopsies")  # the datasheet's title
    expect(page.locator("svg.chart")).to_be_visible()
    shoot(page, "dataset-detail")
    page.goto(f"{base}/#/")
    expect(page.locator(f"[data-dataset-id='{dataset_id}']")).to_be_visible()
    shoot(page, "marketplace")

    # The consumer picks it; the form checks eligibility and price live.
    use_account(page, 1)
    page.goto(f"{base}/#/jobs/new?datasets={dataset_id}")
    page.wait_for_selector("#job-form")
    page.fill("#epsilon", "5")
    expect(page.locator(f"[data-check='{dataset_id}']")).to_contain_text("ε above 2.000")
    expect(page.locator("#create-submit")).to_be_disabled()
    page.fill("#epsilon", "1")
    page.fill("#epochs", "3")
    page.fill("#hidden", "16")
    expect(page.locator("#summary")).to_contain_text("0.51 ETH")
    back_up_key(page)
    expect(page.locator("#create-submit")).to_be_enabled()
    shoot(page, "create-a-job")
    page.click("#create-submit")
    page.wait_for_selector("#job-link", timeout=60_000)
    job_id = int(str(page.get_attribute("#job-link", "href")).rsplit("/", 1)[1])

    # The job page follows it live to settlement.
    page.click("#job-link")
    page.wait_for_selector("li.done[data-stage=settled]", timeout=180_000)
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["consumer"] == consumer and job["status"].upper() == "COMPLETED"
    assert 0 < job["epsilon_spent"] <= 1.0
    expect(page.locator("#eps-spent")).to_have_text(f"{job['epsilon_spent']:.3f}")
    shoot(page, "job-settled")

    # The model is downloaded sealed and decrypted in the page with the key that never left it.
    with page.expect_download() as download:
        page.click("#download-model")
    weights = Path(download.value.path()).read_bytes()
    page.wait_for_selector("#model-ok")
    assert hashlib.sha256(weights).hexdigest() == job["model_hash"][2:]
    tensors = load_safetensors(weights)
    assert any(t.ndim == 2 for t in tensors.values())
    # The job page shows the model card: inputs in order, classes, the privacy accounting.
    card = up.get(f"/api/jobs/{job_id}/card").json()
    expect(page.locator("#card-inputs tbody tr")).to_have_count(min(len(card["inputs"]["columns"]), 64) + (len(card["inputs"]["columns"]) > 64))
    expect(page.locator("#card-inputs tbody tr").first).to_contain_text(card["inputs"]["columns"][0]["name"])
    expect(page.locator("#card-classes")).to_contain_text(card["outputs"]["classes"][-1]["name"])
    expect(page.locator("#card-privacy")).to_contain_text(f"noise multiplier {card['privacy']['noise_multiplier']:.3f}")
    assert card["receipt"]["model_hash"] == job["model_hash"][2:]
    # The consumer measures the model on labelled rows of its own, in the page (the hospital's file
    # stands in for them here); the page's figures are the Python SDK's on the same rows.
    page.set_input_files("#evaluate-file", hospital_csv)
    expect(page.locator("#evaluation-report")).to_be_visible()
    model = build_model(ModelSpec.model_validate(card["model"]["spec"]), schema_of_card(card))
    model.load_state_dict(load_torch_tensors(weights))
    report = evaluate(model, read_table(hospital_csv))
    expect(page.locator("#evaluation-table")).to_contain_text(f"{report['accuracy']:.4f}")
    expect(page.locator("#evaluation-table")).to_contain_text(f"{report['baseline']['accuracy']:.4f}")
    assert report["accuracy"] > report["baseline"]["accuracy"]
    shoot(page, "job-evaluated")

    page.goto(f"{base}/#/jobs")
    expect(page.locator(f"a[href='#/jobs/{job_id}']")).to_be_visible()
    shoot(page, "jobs")
    page.goto(f"{base}/#/workers")
    expect(page.locator("tbody tr")).to_have_count(4)  # trainer, key manager, inference and evaluator enclaves
    expect(page.locator("tbody")).to_contain_text("active")
    shoot(page, "workers")

    # The provider withdraws what the job paid.
    use_account(page, 0)
    page.goto(f"{base}/#/account")
    expect(page.locator("#pending")).to_have_text("0.5 ETH")
    page.click("#withdraw")
    page.wait_for_selector("#withdraw-status .ok-box", timeout=60_000)
    expect(page.locator("#pending")).to_have_text("0 ETH", timeout=30_000)
    shoot(page, "account-withdrawn")
    wait_until(lambda: up.get("/api/payments", params={"account": provider}).json()["pending_wei"] == "0", timeout=30)

    # Readable on a phone: no page is wider than the screen.
    page.set_viewport_size(PHONE)
    for route, name, heading in [
        ("#/", "marketplace", "Datasets"),
        (f"#/datasets/{dataset_id}", "dataset-detail", "Breast-cancer biopsies"),
        ("#/jobs/new", "create-a-job", "Create a training job"),
        (f"#/jobs/{job_id}", "job-settled", f"Job #{job_id}"),
        ("#/workers", "workers", "Workers and key managers"),
        ("#/account", "account", "My account"),
    ]:
        page.goto(f"{base}/{route}")
        expect(page.locator("main h1")).to_contain_text(heading)
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{route} is {overflow}px wider than a phone screen"
        shoot(page, f"phone-{name}")
    context.close()
    assert not errors, errors


def test_errors_show_where_they_happen(up: httpx.Client, page: Page, tmp_path: Path) -> None:
    base = str(up.base_url)
    page.goto(f"{base}/#/list")
    page.wait_for_selector("#file")
    page.click("#list-submit")
    expect(page.locator("#file-error")).to_have_text("Choose a CSV file.")

    bad = tmp_path / "bad.csv"
    bad.write_text("age,weight,outcome\n41,70,yes\n38,heavy,no\n")
    page.set_input_files("#file", bad)
    expect(page.locator("#label-column")).to_be_enabled()
    page.select_option("#label-column", "outcome")
    page.fill("#max-eps", "20")
    page.click("#list-submit")
    expect(page.locator("#terms-error")).to_contain_text("cannot exceed the total")
    page.fill("#max-eps", "2")
    page.click("#list-submit")
    expect(page.locator("#outcome .error-box")).to_contain_text('"heavy" is not a number')
    assert page.locator("[data-step=package]").get_attribute("class") == "failed"
    shoot(page, "list-a-dataset-error")
    page.goto(f"{base}/#/nowhere")
    expect(page.locator("h1")).to_have_text("Not found")


def new_page(browser: Browser, errors: list[str], account: int, base: str) -> Page:
    """A page in its own context (its own selected account), on the marketplace."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/#/")
    use_account(page, account)
    return page


def list_quickly(up: httpx.Client, provider: LocalAccount, seed: int, package: DatasetPackage | None = None, **terms: Any) -> int:
    """A dataset (default: a toy table) listed the browser's way, from Python (the listing page itself is tested above); its indexed id."""
    listing = list_dataset_over_http(up, provider, package or toy_package(150, seed), toy_terms(**terms))
    dataset_id = indexed_id(listing.receipt, "DatasetListed")
    wait_until(lambda: up.get(f"/api/datasets/{dataset_id}").status_code == 200, timeout=30)
    return dataset_id


def test_provider_pauses_tops_up_and_reprices_and_the_job_form_follows(up: httpx.Client, browser: Browser) -> None:
    base = str(up.base_url)
    accounts = [Account.from_key(a["private_key"]) for a in up.get("/api/config").json()["dev_accounts"]]
    dataset_id = list_quickly(up, accounts[2], 81, price=10**17, total=10.0)
    errors: list[str] = []
    provider, consumer = new_page(browser, errors, 2, base), new_page(browser, errors, 1, base)

    # The provider sees its controls and pauses the dataset.
    provider.goto(f"{base}/#/datasets/{dataset_id}")
    expect(provider.locator("#provider-panel")).to_be_visible()
    expect(provider.locator("#dataset-badges")).to_contain_text("Active")
    expect(provider.locator("#dataset-models")).to_have_text("any model spec")
    provider.click("#pause-toggle")
    expect(provider.locator("#manage-ok")).to_contain_text("Pause: done", timeout=60_000)
    expect(provider.locator("#dataset-badges")).to_contain_text("Paused")
    expect(provider.locator("#pause-toggle")).to_have_text("Resume")
    shoot(provider, "dataset-provider-paused")

    # Everyone else sees it paused: a badge in the marketplace, unavailable in the job form.
    consumer.goto(f"{base}/#/")
    expect(consumer.locator(f"[data-dataset-id='{dataset_id}']")).to_contain_text("Paused")
    # The status filter offers the statuses /api/config serves, and asks the gateway for them.
    expect(consumer.locator("#status-filter option")).to_have_text(["All but delisted", "Active", "Paused", "Delisted", "All"])
    consumer.select_option("#status-filter", "active")
    expect(consumer.locator(f"[data-dataset-id='{dataset_id}']")).to_have_count(0)
    consumer.select_option("#status-filter", "paused")
    expect(consumer.locator(f"[data-dataset-id='{dataset_id}']")).to_contain_text("Paused")
    consumer.goto(f"{base}/#/jobs/new?datasets={dataset_id}")
    expect(consumer.locator(f"[data-check='{dataset_id}']")).to_contain_text("paused by its provider")
    expect(consumer.locator("#create-submit")).to_be_disabled()
    shoot(consumer, "create-a-job-dataset-paused")
    consumer.goto(f"{base}/#/datasets/{dataset_id}")
    expect(consumer.locator("#dataset-badges")).to_contain_text("Paused")
    expect(consumer.locator("#provider-panel")).to_be_hidden()

    # Resumed and topped up: the remaining-budget bar shows the larger budget.
    provider.click("#pause-toggle")
    expect(provider.locator("#manage-ok")).to_contain_text("Resume: done", timeout=60_000)
    expect(provider.locator("#budget")).to_contain_text("remaining 10.000")
    provider.fill("#topup-amount", "5")
    provider.click("#topup-submit")
    expect(provider.locator("#manage-ok")).to_contain_text("Top up by 5.000 ε: done", timeout=60_000)
    expect(provider.locator("#budget")).to_contain_text("remaining 15.000")
    expect(provider.locator("#budget")).to_contain_text("of 15.000 ε")
    expect(provider.locator("#dataset-total")).to_have_text("15.000")
    assert up.get(f"/api/datasets/{dataset_id}").json()["remaining_epsilon"] == 15.0

    # The consumer's form is ready at 0.1 + 0.01 ETH; meanwhile the provider raises the price.
    consumer.goto(f"{base}/#/jobs/new?datasets={dataset_id}")
    expect(consumer.locator(f"[data-check='{dataset_id}']")).to_contain_text("eligible")
    consumer.fill("#epochs", "1")
    consumer.fill("#hidden", "8")
    expect(consumer.locator("#summary")).to_contain_text("0.11 ETH")
    back_up_key(consumer)
    provider.fill("#new-price", "0.2")
    provider.click("#price-submit")
    expect(provider.locator("#manage-ok")).to_contain_text("Price set to 0.2 ETH: done", timeout=60_000)
    expect(provider.locator("#dataset-price")).to_have_text("0.2 ETH")

    # The job asks to pay at most what the form showed: the market refuses the higher price, nothing is paid.
    consumer.click("#create-submit")
    expect(consumer.locator("#job-error")).to_contain_text("The price went up", timeout=60_000)
    expect(consumer.locator("#job-error")).to_contain_text("0.21 ETH, more than the 0.11 ETH you agreed to pay")
    expect(consumer.locator("#summary")).to_contain_text("0.21 ETH")  # refreshed to the current price
    shoot(consumer, "create-a-job-price-rose")
    assert up.get("/api/jobs", params={"dataset_id": dataset_id}).json()["total"] == 0
    consumer.click("#create-submit")
    consumer.wait_for_selector("#job-link", timeout=60_000)
    job_id = int(str(consumer.get_attribute("#job-link", "href")).rsplit("/", 1)[1])
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["prices_wei"] == [str(2 * 10**17)] and job["escrow_wei"] == str(21 * 10**16)
    provider.context.close()
    consumer.context.close()
    assert not errors, errors


def test_the_job_form_offers_image_networks_and_each_tasks_own_fields(up: httpx.Client, browser: Browser) -> None:
    base = str(up.base_url)
    accounts = [Account.from_key(a["private_key"]) for a in up.get("/api/config").json()["dev_accounts"]]
    images = list_quickly(up, accounts[2], 0, datasets.synthetic_images(40, seed=1))
    diabetes = datasets.diabetes()
    regression = list_quickly(up, accounts[2], 0, DatasetPackage(diabetes.features[:150], diabetes.labels[:150], diabetes.schema))
    errors: list[str] = []
    page = new_page(browser, errors, 1, base)

    def created_spec() -> dict[str, Any]:
        back_up_key(page)
        page.click("#create-submit")
        page.wait_for_selector("#job-link", timeout=60_000)
        job_id = int(str(page.get_attribute("#job-link", "href")).rsplit("/", 1)[1])
        wait_until(lambda: up.get(f"/api/jobs/{job_id}").status_code == 200, timeout=30)
        spec: dict[str, Any] = up.get(f"/api/jobs/{job_id}").json()["model_spec"]
        return spec

    # Colour images: the MLP is refused with the reason; a ResNet shows its depth and width, not hidden sizes.
    page.goto(f"{base}/#/jobs/new?datasets={images}")
    expect(page.locator(f"[data-check='{images}']")).to_contain_text("eligible")
    expect(page.locator("#datasets-heading")).to_contain_text("of shape 3×32×32")
    expect(page.locator("#summary")).to_contain_text("MLP needs flat features; this schema's are 3×32×32 images")
    expect(page.locator("#create-submit")).to_be_disabled()
    page.select_option("#architecture", "resnet")
    expect(page.locator("#depth")).to_have_value("32")
    expect(page.locator("#width")).to_have_value("16")
    expect(page.locator("#hidden")).to_be_hidden()
    expect(page.locator("#regression-loss")).to_be_hidden()
    expect(page.locator("#released-statistics")).to_be_visible()
    page.fill("#depth", "21")
    expect(page.locator("#summary")).to_contain_text("A ResNet's depth is 6n+2")
    page.fill("#depth", "20")
    page.fill("#width", "8")
    page.fill("#epochs", "1")
    page.fill("#input-mean", "0.5, 0.5")
    page.fill("#input-scale", "0.25, 0.25")
    expect(page.locator("#summary")).to_contain_text("(or 3, one per image channel) (2 given)")
    page.fill("#input-mean", "0.5, 0.5, 0.5")
    page.fill("#input-scale", "0.25, 0.25, 0.25")
    expect(page.locator("#summary")).not_to_contain_text("needs")
    shoot(page, "create-a-job-resnet")
    spec = created_spec()
    assert (spec["architecture"], spec["depth"], spec["width"], spec["hidden_sizes"]) == ("resnet", 20, 8, [])
    assert spec["input_mean"] == [0.5] * 3 and spec["input_scale"] == [0.25] * 3

    # A regression table: its target and loss are shown, the classification-only statistics are not, and
    # the image networks are refused; the chosen loss reaches the published spec.
    page.goto(f"{base}/#/jobs/new?datasets={regression}")
    expect(page.locator("#datasets-heading")).to_contain_text("regression on 1 target (progression, declared 0 to 400)")
    expect(page.locator("#regression-loss")).to_be_visible()
    expect(page.locator("#survival-head")).to_be_hidden()
    expect(page.locator("#released-statistics")).to_be_hidden()
    page.select_option("#architecture", "vgg")
    expect(page.locator("#depth")).to_have_value("9")
    expect(page.locator("#summary")).to_contain_text("VGG (colour images) needs image features")
    page.select_option("#architecture", "mlp")
    page.select_option("#regression-loss", "huber")
    page.fill("#hidden", "8")
    page.fill("#epochs", "1")
    shoot(page, "create-a-job-regression")
    spec = created_spec()
    assert (spec["architecture"], spec["regression_loss"], spec["hidden_sizes"]) == ("mlp", "huber", [8])
    page.goto(f"{base}/#/datasets/{regression}")
    expect(page.locator("#schema-label")).to_have_text("regression on 1 target (progression, declared 0 to 400)")

    # A survival table with categorical columns: the survival settings and the embedding width are
    # offered; standardisation computed from the consumer's own CSV (category names in it) leaves the
    # categorical columns at mean 0, scale 1, and changing them there is refused.
    flchain = datasets.flchain(categorical=True)
    survival = list_quickly(up, accounts[2], 0, DatasetPackage(flchain.features[:150], flchain.labels[:150], flchain.schema))
    page.goto(f"{base}/#/jobs/new?datasets={survival}")
    heading = page.locator("#datasets-heading")
    expect(heading).to_contain_text("3 categorical (sex, mgus, flc_grp)")
    expect(heading).to_contain_text("survival: time to event in 14 intervals ending at 365.25, 730.5, 1095.75, 1461, …")
    for shown in ("#survival-head", "#survival-prior", "#embedding-dim"):
        expect(page.locator(shown)).to_be_visible()
    expect(page.locator("#regression-loss")).to_be_hidden()
    expect(page.locator("#released-statistics")).to_be_hidden()
    expect(page.locator("#bounds-table tr", has_text="sex")).to_contain_text("categorical (F, M): its category's embedding")
    vocabularies = dict(flchain.schema.categories)
    names = flchain.schema.feature_names
    mine = "\n".join([",".join(names)] + [
        ",".join(vocabularies[n][int(v)] if n in vocabularies else f"{v:g}" for n, v in zip(names, row, strict=True))
        for row in flchain.features[200:220]
    ])  # fmt: skip
    page.set_input_files("#stats-file", files=[{"name": "mine.csv", "mimeType": "text/csv", "buffer": mine.encode()}])
    expect(page.locator("#stats-hint")).to_contain_text("Computed from 20 rows of mine.csv")
    categorical = [names.index(n) for n in vocabularies]
    means = [float(v) for v in page.input_value("#input-mean").split(",")]
    scales = [float(v) for v in page.input_value("#input-scale").split(",")]
    assert [means[i] for i in categorical] == [0, 0, 0] and [scales[i] for i in categorical] == [1, 1, 1]
    assert abs(means[0] - float(flchain.features[200:220, 0].mean())) < 1e-3  # age, a numeric column
    page.fill("#input-mean", ",".join(["0.5"] * len(names)))
    expect(page.locator("#summary")).to_contain_text("sex, mgus, flc_grp are categorical: mean 0 and standard deviation 1 there")
    page.fill("#input-mean", ",".join(map(str, means)))
    page.select_option("#survival-head", "per_interval")
    page.fill("#survival-prior", "1.5")
    expect(page.locator("#summary")).to_contain_text("The share expected to survive must be between 0 and 1")
    page.fill("#survival-prior", "0.7")
    page.fill("#embedding-dim", "4")
    page.fill("#hidden", "8")
    page.fill("#epochs", "1")
    shoot(page, "create-a-job-survival")
    spec = created_spec()
    assert (spec["survival_head"], spec["survival_prior"], spec["embedding_dim"]) == ("per_interval", 0.7, 4)
    assert [spec["input_mean"][i] for i in categorical] == [0, 0, 0] and [spec["input_scale"][i] for i in categorical] == [1, 1, 1]
    page.context.close()
    assert not errors, errors


def test_cancel_an_open_job_and_see_the_refund(up: httpx.Client, page: Page) -> None:
    base = str(up.base_url)
    config = up.get("/api/config").json()
    accounts = [Account.from_key(a["private_key"]) for a in config["dev_accounts"]]
    dataset_id = list_quickly(up, accounts[2], 82, price=10**17)
    # A job whose model spec was never published: the worker refuses to claim it, so it stays open.
    now = int(rpc(up, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    request = ([dataset_id], os.urandom(32), EPSILON_SCALE, 10**13, os.urandom(32), 0, 10**17, now + 3600, now + 7200)
    receipt = send_transaction(up, accounts[1], to=config["contracts"]["job_market"], data=encode_market_call("createJob", [request]), value=10**17)
    job_id = indexed_id(receipt, "JobCreated")
    wait_until(lambda: up.get(f"/api/jobs/{job_id}").status_code == 200, timeout=30)

    page.goto(f"{base}/#/jobs/{job_id}")
    use_account(page, 2)  # not the consumer: no cancel button
    expect(page.locator("main h1")).to_contain_text("OPEN")
    expect(page.locator("#cancel-job")).to_be_hidden()
    use_account(page, 1)
    expect(page.locator("#cancel-job")).to_be_visible()
    shoot(page, "job-open-cancellable")
    page.click("#cancel-job")
    expect(page.locator("#cancel-ok")).to_be_visible(timeout=60_000)
    expect(page.locator("main h1")).to_contain_text("CANCELLED")
    expect(page.locator("#refund")).to_have_text("0.1 ETH")
    expect(page.locator("li[data-stage=cancelled]")).to_contain_text("0.1 ETH refunded")
    expect(page.locator("#cancel-job")).to_be_hidden()
    shoot(page, "job-cancelled")
    job = up.get(f"/api/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["refund_wei"] == str(10**17)
    assert up.get(f"/api/datasets/{dataset_id}").json()["reserved_epsilon"] == 0

    page.goto(f"{base}/#/account")
    refund = page.locator("#payments tr[data-reason=refund]", has_text=f"#{job_id}")
    expect(refund).to_have_count(1)
    expect(refund).to_contain_text("0.1 ETH")
    shoot(page, "account-refund")
