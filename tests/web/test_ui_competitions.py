"""A competition run entirely from the browser, in Chromium, against a real gateway and a real evaluator enclave.

The organizer creates a competition from the page (the test set is sealed in the page to the key
manager's on-chain key, deposited, the prize escrowed); a participant submits a model sealed in
the page; a second participant's model breaks the rules and the key manager's refusal is shown;
the evaluator enclave scores the entries (public split through the Ladder, then private after the
window); the organizer closes, buys the winning model and downloads it, decrypted in the page.

Competitions move chain time past their windows, so this module runs its own deployment on an
embedded chain (``bring_up`` + ``start_competitions``) behind an in-process gateway served by
uvicorn, never the session's shared ``localnet``; the evaluator is driven with ``run_once``
between browser steps. Screenshots (desktop and phone) go to ``screenshots/``.

``GET /api/competitions/{id}`` answers from the gateway's chain index, which its indexer thread
brings up to date every 0.2 s: right after a transaction (the page's create, submit or close, or
the evaluator's ``postScore``) the index may not hold it yet (a 404 for a new competition, an entry
still unscored). The test therefore reads the gateway until it shows the transaction
(``indexed``), never once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from enclave_worker.trusted.models import ModelSpec
from enclave_worker.trusted.onchain import Split
from marketplace import chain as chain_mod
from marketplace.abi import load_artifact
from marketplace.competing import BlobCompetitionStore, Rules, open_competition
from marketplace.consumer import Consumer
from marketplace.provider import list_dataset
from sterling.gateway import create_app
from sterling.localnet import LocalCompetitions, LocalNet, bring_up, start_competitions
from tests.conftest import TOY_SCHEMA, toy_package, toy_spec, toy_terms
from tests.e2e.test_competition import TEST, _terms, _weights
from tests.gateway.conftest import Gateway, make_gateway
from tests.gateway.test_up import wait_until
from tests.web.test_ui_flows import PHONE, shoot, use_account

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ETHER = 10**18
MLP = ModelSpec(architecture="mlp", hidden_sizes=(32,), epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0)
TOO_LARGE = ModelSpec(architecture="mlp", hidden_sizes=(128,), epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0)
MAX_PARAMETERS = 5000  # MLP: 64·32 + 32 + 32·10 + 10 = 2410 parameters; TOO_LARGE: 64·128 + 128 + 128·10 + 10 = 9610


@dataclass
class Contest:
    url: str
    net: LocalNet
    competitions: LocalCompetitions
    gateway: Gateway
    organizer: LocalAccount
    alice: LocalAccount
    bob: LocalAccount


def js_number(value: float) -> str:
    """``String(value)`` in the page's JavaScript: a whole score (1.0, as a perfect accuracy is) has no ".0"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def wait_for_outcome(page: Page, ok: str, error: str, progress: str, *, name: str = "competition-create", timeout: float = 90_000) -> None:
    """Wait until the flow shows ``ok``; if it shows ``error`` or neither in time, fail with where it stood (and a screenshot)."""
    try:
        page.wait_for_selector(f"{ok}, {error}", timeout=timeout)
    except PlaywrightTimeout:
        shoot(page, f"failed-{name}")
        stood = page.locator(progress).inner_text()
        raise AssertionError(f"no outcome after {timeout / 1000:.0f} s; the flow stood at:\n{stood}") from None
    if page.locator(error).count():
        shoot(page, f"failed-{name}")
        raise AssertionError(f"the flow failed: {page.locator(progress).inner_text()}")


def indexed(api: Any, cid: int, shows: Callable[[dict[str, Any]], bool], *, timeout: float = 15) -> dict[str, Any]:
    """Competition ``cid`` as the gateway serves it, once its index shows what ``shows`` asks for (see the module's docstring)."""

    def read() -> dict[str, Any] | None:
        answer = api.get(f"/api/competitions/{cid}")
        if answer.status_code == 404:
            return None
        assert answer.status_code == 200, answer.text
        detail: dict[str, Any] = answer.json()
        return detail if shows(detail) else None

    found: dict[str, Any] = wait_until(read, timeout=timeout)
    return found


def wider_than_the_screen(page: Page) -> list[str]:
    """The innermost elements reaching past the viewport's right edge (to say what overflows on a phone)."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll("body *")]
          .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
          .filter((e) => ![...e.children].some((k) => k.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5))
          .filter((e) => !e.closest(".table-wrap"))
          .map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${e.className}: ${e.textContent.slice(0, 60)}`)"""
    )
    return found


@contextlib.contextmanager
def served(net: LocalNet, started: LocalCompetitions, root: Path, dev_accounts: tuple[LocalAccount, ...]) -> Iterator[tuple[str, Gateway]]:
    """The gateway over ``net`` with ``started``'s key manager side, under uvicorn, its indexer in a thread."""
    gateway = make_gateway(net, root, dev_accounts=dev_accounts)
    app = create_app(gateway.settings, services=dataclasses.replace(gateway.services, competition_keys=started.keys))
    stop = threading.Event()
    indexer = threading.Thread(target=gateway.indexer.run, args=(stop,), kwargs={"interval": 0.2}, daemon=True)
    indexer.start()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    serving.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not serving.is_alive() or time.monotonic() > deadline:
                pytest.fail("the gateway did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", gateway
    finally:
        app.state.feed.close()
        server.should_exit = True
        stop.set()
        serving.join(timeout=10)
        indexer.join(timeout=10)
        sock.close()
        gateway.client.close()
        gateway.index.close()


@pytest.fixture(scope="module")
def contest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Contest]:
    root = tmp_path_factory.mktemp("ui-competitions")
    net = bring_up(chain_mod.embedded(), root / "net")
    started = start_competitions(net)
    try:
        organizer, alice, bob = (net.chain.new_account() for _ in range(3))
        with served(net, started, root / "gateway", (organizer, alice, bob)) as (url, gateway):
            yield Contest(url, net, started, gateway, organizer, alice, bob)
    finally:
        started.close()
        net.close()


def test_create_submit_score_close_buy_and_download_in_the_browser(contest: Contest, browser: Browser, tmp_path: Path) -> None:
    t = contest
    api = t.gateway.client
    test_file, alice_file, bob_file = tmp_path / "digits-test.safetensors", tmp_path / "alice.safetensors", tmp_path / "bob.safetensors"
    test_file.write_bytes(TEST.to_bytes())
    _, alice_weights = _weights(MLP, 200, seed=1)
    _, bob_weights = _weights(TOO_LARGE, 0, seed=2)
    alice_file.write_bytes(alice_weights)
    bob_file.write_bytes(bob_weights)
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # The organizer creates a competition: the test set is sealed in the page, the prize escrowed.
    page.goto(f"{t.url}/#/competitions")
    use_account(page, 0)
    expect(page.locator("#competition-list")).to_contain_text("No competitions yet")
    page.click("#new-competition")
    page.set_input_files("#test-set", test_file)
    expect(page.locator("#test-set-info")).to_contain_text(f"{TEST.rows} rows · 64 features · 10 classes")
    page.fill("#title", "Handwritten digits")
    page.fill("#description", "8×8 digits, 10 classes.\nHighest private accuracy wins.")
    page.fill("#training-data", "https://scikit-learn.org/stable/datasets/toy_dataset.html")
    page.fill("#training-datasets", "1")
    page.fill("#prize", "1")
    page.fill("#window-hours", "1")
    page.fill("#scoring-hours", "1")
    page.fill("#cap", "2")
    page.fill("#max-parameters", str(MAX_PARAMETERS))
    page.uncheck("#arch-cnn")
    page.select_option("#purchase-policy", "organizer")
    shoot(page, "competition-create")
    page.click("#create-submit")
    wait_for_outcome(page, "#created-link", "#create-error", "#progress-panel")
    expect(page.locator("#create-steps li.done")).to_have_count(5)
    cid = int(str(page.get_attribute("#created-link", "href")).rsplit("/", 1)[1])
    created = indexed(api, cid, lambda c: True)
    assert created["organizer"] == t.organizer.address and created["prize_wei"] == str(ETHER) and created["phase"] == "submissions"
    assert created["ladder_step"] == pytest.approx(0.01) and created["public_split_bps"] == 3000 and created["submission_cap"] == 2
    assert created["max_parameters"] == MAX_PARAMETERS and created["architectures"] == ["logistic_regression", "mlp"]
    assert created["purchase_policy"] == "organizer" and created["closes_at"] - created["opens_at"] == 3600
    assert created["rules"]["title"] == "Handwritten digits" and created["rules"]["training_datasets"] == [1]
    assert created["schema_hash"] == "0x" + TEST.schema.hash().hex()
    stored = api.get(f"/api/blobs/{created['test_set_hash'][2:]}").content
    assert stored[:4] == b"STRL" and hashlib.sha256(stored).hexdigest() == created["test_set_hash"][2:]
    assert TEST.features[:8].tobytes() not in stored and TEST.labels.tobytes() not in stored

    # Its page: rules (checked against the on-chain hash), prize, the Ladder, a live countdown.
    page.click("#created-link")
    expect(page.locator("#competition-title")).to_have_text("Handwritten digits")
    expect(page.locator("#competition-about")).to_contain_text("matches the rules hash on-chain")
    expect(page.locator("#competition-prize")).to_contain_text("1 ETH")
    expect(page.locator("#competition-datasets a")).to_have_attribute("href", "#/datasets/1")
    expect(page.locator("#ladder-note")).to_contain_text("η = 0.01")
    countdown = page.locator("#countdown")
    expect(countdown).to_have_text(re.compile(r"^closes in (59 min \d+ s|1 h 0 min)$"))
    first = countdown.text_content()
    expect(countdown).not_to_have_text(str(first), timeout=5000)  # it ticks
    expect(page.locator("#close-panel")).to_be_hidden()
    expect(page.locator("#leaderboard")).to_contain_text("No entries yet")

    # Alice submits: a file that is not a model is refused in the page, her model is sealed and admitted.
    use_account(page, 1)
    expect(page.locator("#weights-hint")).to_contain_text("You made 0 of 2 allowed entries")
    page.set_input_files("#weights-file", test_file)
    expect(page.locator("#weights-error")).to_contain_text("no Sterling model spec and input schema")
    page.set_input_files("#weights-file", alice_file)
    expect(page.locator("#weights-info")).to_contain_text("mlp (hidden 32)")
    expect(page.locator("#weights-error")).to_have_text("")
    page.fill("#ask-price", "0.5")
    page.click("#submit-model")
    wait_for_outcome(page, "#submit-ok", "#submit-error", "#submit-panel", name="competition-submit")
    expect(page.locator("#submitted-index")).to_have_text("#0")
    entry = indexed(api, cid, lambda c: c["submission_count"] == 1)["submissions"][0]
    assert entry["participant"] == t.alice.address and entry["ask_price_wei"] == str(ETHER // 2)
    sealed = api.get(f"/api/blobs/{entry['content_hash'][2:]}").content
    assert sealed[:4] == b"STRL" and alice_weights[-256:] not in sealed and b"sterling_model_spec" not in sealed
    assert t.competitions.competitions.weights_hash(cid, 0) == hashlib.sha256(alice_weights).digest()

    # Bob's model is too large: the key manager refuses it, the page says why, nothing is submitted.
    use_account(page, 2)
    expect(page.locator("#weights-hint")).to_contain_text("You made 0 of 2 allowed entries")
    page.set_input_files("#weights-file", bob_file)
    expect(page.locator("#weights-info")).to_contain_text("mlp (hidden 128)")
    page.click("#submit-model")
    refusal = page.locator("#submit-error")
    expect(refusal).to_contain_text("The key manager refused the model", timeout=60_000)
    expect(refusal).to_contain_text(f"the model has 9610 parameters, competition {cid} allows at most {MAX_PARAMETERS}")
    expect(page.locator("#submit-steps [data-step=admit]")).to_have_class("failed")
    assert api.get(f"/api/competitions/{cid}").json()["submission_count"] == 1

    # The evaluator enclave scores Alice's entry on the public split; the leaderboard and its chart follow.
    posted = t.competitions.evaluator.run_once()
    assert [(p.index, p.split) for p in posted] == [(0, Split.PUBLIC)]
    public = indexed(api, cid, lambda c: c["submissions"][0]["public_score"] is not None)["submissions"][0]["public_score"]
    assert public > 0.5
    public_cell = page.locator("#leaderboard-table tr[data-entry='0'] td[data-public]")
    expect(public_cell).to_have_attribute("data-public", js_number(public), timeout=30_000)
    public_text = re.sub(r"\.?0+$", "", f"{public:.6f}")  # the chain's 10⁻⁶ resolution, trailing zeros dropped
    expect(public_cell).to_have_text(public_text)
    expect(page.locator("#competition-public-best")).to_have_text(public_text)
    expect(page.locator("#leaderboard-svg circle.public")).to_have_count(1)
    expect(page.locator("#leaderboard-svg path")).to_have_count(1)
    shoot(page, "competition-leaderboard")

    # The window closes; the evaluator posts the private scores; the organizer closes and Alice wins.
    t.net.chain.advance_time(3601)
    private = t.competitions.evaluator.run_once()
    assert [(p.index, p.split) for p in private] == [(0, Split.PRIVATE)]
    use_account(page, 0)
    expect(page.locator("#close-panel")).to_be_visible(timeout=30_000)
    expect(page.locator("#close-reason")).to_contain_text("Every entry has its private score")
    expect(page.locator("#countdown")).to_contain_text("anyone may close in")
    before = t.competitions.competitions.credits(t.alice.address)
    page.click("#close-competition")
    wait_for_outcome(page, "#close-ok", "#close-error", "#close-panel", name="competition-close")
    expect(page.locator("#winner-chip")).to_be_visible(timeout=30_000)
    expect(page.locator("#leaderboard-table tr.winner")).to_have_attribute("data-entry", "0")
    closed = indexed(api, cid, lambda c: c["status"] == "closed")
    assert closed["status"] == "closed" and closed["leader"] == 0
    assert t.competitions.competitions.credits(t.alice.address) == before + ETHER
    private_score = closed["submissions"][0]["private_score"]
    private_cell = page.locator("#leaderboard-table tr[data-entry='0'] td[data-private]")
    expect(private_cell).to_have_attribute("data-private", js_number(private_score))
    expect(page.locator("#leaderboard-svg circle.private")).to_have_count(1)
    expect(page.locator("#leaderboard-svg circle.public")).to_have_count(1)

    # Only the organizer may buy (the competition's policy): Bob gets no buy button.
    use_account(page, 2)
    expect(page.locator("#leaderboard-table")).to_be_visible()
    expect(page.locator("[data-buy]")).to_have_count(0)

    # The organizer buys Alice's model, opens it in the page and saves it: the weights she submitted.
    use_account(page, 0)
    buy = page.locator("[data-buy='0']")
    expect(buy).to_have_text("Buy for 0.5 ETH", timeout=30_000)
    buy.click()
    wait_for_outcome(page, "#buy-ok", "#buy-error", "#buy-panel", name="competition-buy")
    expect(page.locator("#buy-steps li.done")).to_have_count(4)
    expect(page.locator("#opened-sha256")).to_have_text("0x" + hashlib.sha256(alice_weights).hexdigest())
    with page.expect_download() as download:
        page.click("#download-model")
    assert Path(download.value.path()).read_bytes() == alice_weights
    assert t.competitions.competitions.credits(t.alice.address) == before + ETHER + ETHER // 2
    shoot(page, "competition-closed")
    # Bought once: opening again pays nothing more.
    expect(page.locator("[data-buy='0']")).to_have_text("Open again", timeout=30_000)
    page.click("[data-buy='0']")
    expect(page.locator("#buy-ok")).to_contain_text("Opened entry #0")
    assert t.competitions.competitions.credits(t.alice.address) == before + ETHER + ETHER // 2

    # The list shows it closed with its public best; Alice withdraws her prize and sale there.
    page.goto(f"{t.url}/#/competitions")
    card = page.locator(f"[data-competition-id='{cid}']")
    expect(card).to_contain_text("Handwritten digits")
    expect(card).to_contain_text("Closed")
    expect(card.locator("[data-public-best]")).to_have_text(public_text)
    shoot(page, "competitions")
    use_account(page, 1)
    expect(page.locator("#competition-credits")).to_have_text("1.5 ETH", timeout=30_000)
    page.click("#competition-withdraw")
    expect(page.locator("#withdraw-ok")).to_be_visible(timeout=60_000)
    assert t.competitions.competitions.credits(t.alice.address) == 0

    # Readable on a phone.
    page.set_viewport_size(PHONE)
    pages = [("#/competitions", "competitions"), (f"#/competitions/{cid}", "competition"), ("#/competitions/new", "competition-create")]
    for route, name in pages:
        page.goto(f"{t.url}/{route}")
        expect(page.locator("main h1")).to_be_visible()
        page.wait_for_timeout(300)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{route} is {overflow}px wider than a phone screen"
        shoot(page, f"phone-{name}")
    context.close()
    assert not errors, errors


def test_a_jobs_model_sealed_to_the_key_manager_is_trained_and_entered_from_the_browser(contest: Contest, browser: Browser) -> None:
    """Bob trains a job from the create-job page with its model sealed to the key manager (the
    page puts the key manager's attested key on-chain as the job's consumer key), a real trainer
    enclave trains it, and he enters its model from the competition page: the key manager admits
    it from the job's sealed result, the page submits the admission. Nobody, Bob included, ever
    holds the weights: the page never fetches the job's result or the entry's ciphertext and offers
    no download. A competition whose size limit the model breaks gets the key manager's refusal on
    screen; a job sealed to Bob's own key is listed as one that cannot be entered, and why.

    The dataset, the competitions and Bob's second job (sealed to himself) are made with the SDK:
    listing a dataset and creating a competition in the page are the flows tested above and in
    ``test_ui_flows``; what is new here is the sealed job, made in the page.
    """
    t = contest
    net, api, keys = t.net, t.gateway.client, t.competitions.keys
    km_key = net.registry.active_key_manager_key(net.key_manager.signer)

    # A toy dataset, and two competitions over its schema suggesting it: one allows 5 parameters (a
    # logistic regression on 4 features and 2 classes has 10), the other any size.
    listed = list_dataset(
        toy_package(300, 7), net.chain.new_account(), terms=toy_terms(), market=net.market, registry=net.registry,
        key_manager=net.key_manager, blobs=net.blobs,
    )  # fmt: skip
    organizer = net.chain.new_account()
    rules = Rules(title="Toy, trained here", training_datasets=(listed.dataset_id,))

    def opened(max_parameters: int) -> int:
        return open_competition(
            organizer, toy_package(200, 99), terms=_terms(net.chain.now(), max_parameters=max_parameters), rules=rules,
            competitions=t.competitions.competitions, registry=net.registry, key_manager=keys, blobs=BlobCompetitionStore(net.blobs),
        ).competition_id  # fmt: skip

    strict, cid = opened(5), opened(0)
    assert indexed(api, cid, lambda c: True)["schema_hash"] == "0x" + TOY_SCHEMA.hash().hex()

    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    fetched: list[str] = []
    downloads: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: fetched.append(r.url))
    page.on("download", lambda d: downloads.append(d.suggested_filename))

    # Bob has no job to enter yet; the competition's page links to a job sealed to the key manager on its dataset.
    page.goto(f"{t.url}/#/competitions/{cid}")
    use_account(page, 2)
    expect(page.locator("#no-jobs")).to_contain_text("no completed job whose model is sealed to the key manager")
    expect(page.locator("#submit-job")).to_be_disabled()
    page.click("#train-sealed")
    expect(page.locator(f"#ds-{listed.dataset_id}")).to_be_checked()
    expect(page.locator("#seal-key-manager")).to_be_checked()
    expect(page.locator("#seal-choice")).to_contain_text(
        "Seal the model to the key manager, for serving or a competition: nobody, you included, ever sees its weights."
    )
    page.select_option("#architecture", "logistic_regression")
    page.fill("#epochs", "3")
    page.fill("#lr", "0.1")
    expect(page.locator("#create-submit")).to_be_enabled()
    shoot(page, "create-job-sealed")
    page.click("#create-submit")
    expect(page.locator("#job-sealed-to-key-manager")).to_contain_text("nobody, you included, ever sees its weights", timeout=60_000)
    expect(page.locator("#save-key")).to_have_count(0)
    sealed_id = int(str(page.get_attribute("#job-link", "href")).rsplit("/", 1)[1])
    job = net.market.job(sealed_id)
    assert job.consumer == t.bob.address and job.consumer_key == km_key

    # Still open: listed as not ready. Then a real trainer enclave trains it, and a second job of Bob's, sealed to himself.
    page.goto(f"{t.url}/#/competitions/{cid}")
    expect(page.locator(f"[data-job-check='{sealed_id}']")).to_contain_text("still waiting for a worker", timeout=15_000)
    own = Consumer(t.bob, market=net.market, blobs=net.blobs)
    own_id = own.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=0.5, delta=1e-5, worker_fee=10**16).job_id  # type: ignore[arg-type]
    net.worker.run_job(sealed_id)
    net.worker.run_job(own_id)
    model_hash = net.market.result_submitted(sealed_id).model_hash
    result_hash = net.market.result_submitted(sealed_id).result_hash
    wait_until(lambda: all(api.get(f"/api/jobs/{j}").json()["status"] == "completed" for j in (sealed_id, own_id)), timeout=15)

    # The job's page: sealed to the key manager, what it is for, and no download.
    page.goto(f"{t.url}/#/jobs/{sealed_id}")
    expect(page.locator("#model-sealed")).to_contain_text("nobody, its consumer included, can download or decrypt its weights")
    expect(page.locator("#sealed-to")).to_contain_text("the key manager enclave")
    expect(page.locator("#sealed-model-hash")).to_have_text("0x" + model_hash.hex())
    expect(page.locator("#download-model")).to_have_count(0)
    shoot(page, "job-sealed-to-key-manager")
    page.goto(f"{t.url}/#/jobs/{own_id}")
    expect(page.locator("#download-model")).to_be_visible()  # sealed to Bob: his to download (the page holds no key for it)
    expect(page.locator("#sealed-to")).to_contain_text("the consumer's key")

    # A competition allowing 5 parameters: the key manager refuses the model, the page says why; nothing is submitted.
    page.goto(f"{t.url}/#/competitions/{strict}")
    own_row = page.locator(f"[data-job-check='{own_id}']")
    expect(own_row).to_contain_text("sealed to your own key: the key manager cannot open it", timeout=15_000)
    expect(page.locator(f"#job-{own_id}")).to_be_disabled()
    expect(page.locator("#own-key-note")).to_contain_text("can still be entered as a file: download it from its job's page")
    expect(page.locator(f"[data-job-check='{sealed_id}']")).to_contain_text("can be entered")
    expect(page.locator("#job-hint")).to_contain_text("You made 0 of 2 allowed entries")
    page.check(f"#job-{sealed_id}")
    page.click("#submit-job")
    refusal = page.locator("#submit-job-error")
    expect(refusal).to_contain_text(f"The key manager refused the model of job #{sealed_id}", timeout=60_000)
    expect(refusal).to_contain_text(f"the model has 10 parameters, competition {strict} allows at most 5")
    expect(page.locator("#submit-job-steps [data-step=check]")).to_have_class("done")
    expect(page.locator("#submit-job-steps [data-step=admit]")).to_have_class("failed")
    shoot(page, "competition-submit-job-refused")
    assert t.competitions.competitions.competition(strict).submission_count == 0

    # The open competition takes it: admission by the key manager, then submit from Bob's wallet.
    page.goto(f"{t.url}/#/competitions/{cid}")
    expect(page.locator(f"[data-job-check='{sealed_id}']")).to_contain_text("can be entered", timeout=15_000)
    page.check(f"#job-{sealed_id}")
    page.fill("#job-ask-price", "0.25")
    page.click("#submit-job")
    wait_for_outcome(page, "#submit-job-ok", "#submit-job-error", "#submit-job-panel", name="competition-submit-job")
    expect(page.locator("#submit-job-steps li.done")).to_have_count(3)
    expect(page.locator("#submitted-job-index")).to_have_text("#0")
    expect(page.locator("#submitted-job-weights")).to_have_text("0x" + model_hash.hex())
    submission = t.competitions.competitions.submission(cid, 0)
    assert submission.participant == t.bob.address and submission.ask_price == ETHER // 4
    assert t.competitions.competitions.weights_hash(cid, 0) == model_hash  # the job's receipt's weights, which nobody held
    entry = indexed(api, cid, lambda c: c["submission_count"] == 1)["submissions"][0]
    assert entry["participant"] == t.bob.address and entry["content_hash"] == "0x" + submission.content_hash.hex()
    assert net.blobs.get(submission.content_hash.hex())[:4] == b"STRL"

    # The entry in the leaderboard, then its public score; the job is now listed as entered; the cap hint follows.
    expect(page.locator("#leaderboard-table tr[data-entry='0']")).to_contain_text("you", timeout=30_000)
    expect(page.locator(f"[data-job-check='{sealed_id}']")).to_contain_text("✓ entered, as entry #0", timeout=30_000)
    expect(page.locator(f"#job-{sealed_id}")).to_be_disabled()
    expect(page.locator("#job-hint")).to_contain_text("You made 1 of 2 allowed entries")
    posted = [p for p in t.competitions.evaluator.run_once() if p.competition_id == cid]
    assert [(p.index, p.split) for p in posted] == [(0, Split.PUBLIC)]
    public = indexed(api, cid, lambda c: c["submissions"][0]["public_score"] is not None)["submissions"][0]["public_score"]
    public_cell = page.locator("#leaderboard-table tr[data-entry='0'] td[data-public]")
    expect(public_cell).to_have_attribute("data-public", js_number(public), timeout=30_000)
    shoot(page, "competition-submit-job")

    # The page never fetched the sealed result or the entry's ciphertext, and saved nothing.
    for forbidden in (f"/api/jobs/{sealed_id}/result", f"/api/blobs/{result_hash.hex()}", f"/api/blobs/{submission.content_hash.hex()}"):
        assert not [u for u in fetched if forbidden in u], f"the page fetched {forbidden}"
    assert not downloads, downloads

    # Readable on a phone.
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the competition page is {overflow}px wider than a phone screen: {wider_than_the_screen(page)}"
    shoot(page, "phone-competition-submit-job")
    context.close()
    assert not errors, errors


USD = 10**6  # the test stablecoin has 6 decimals


def test_in_a_token_market_the_page_approves_the_prize_then_creates_the_competition(
    tmp_path_factory: pytest.TempPathFactory, browser: Browser
) -> None:
    """A market paid in an ERC-20 (as tests/web/test_ui_token_market.py): the prize is approved, then escrowed in tokens."""
    root = tmp_path_factory.mktemp("ui-competitions-token")
    chain = chain_mod.embedded()
    minter = chain.new_account()
    artifact = load_artifact("TestStablecoin", test=True)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    address = chain.transact(minter, factory.constructor(), name="deploy TestStablecoin").receipt["contractAddress"]  # type: ignore[arg-type]
    token = chain.w3.eth.contract(address=address, abi=artifact["abi"])
    net = bring_up(chain, root / "net", payment_token=str(address))
    started = start_competitions(net)
    test_file = root / "digits-test.safetensors"
    test_file.write_bytes(TEST.to_bytes())
    try:
        organizer = chain.new_account()
        chain.transact(minter, token.functions.mint(organizer.address, 100 * USD))
        with served(net, started, root / "gateway", (organizer,)) as (url, gateway):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/#/competitions/new")
            use_account(page, 0)
            expect(page.locator("label[for=prize]")).to_have_text("Prize (tUSD)")
            expect(page.locator("#create-submit")).to_have_text("Encrypt, approve and open the competition")
            page.set_input_files("#test-set", test_file)
            page.fill("#title", "Digits, paid in tokens")
            page.fill("#prize", "25")
            page.click("#create-submit")
            wait_for_outcome(page, "#created-link", "#create-error", "#progress-panel", name="competition-create-token")
            expect(page.locator("[data-step=approve]")).to_have_class("done")
            expect(page.locator("[data-step=create]")).to_have_class("done")
            expect(page.locator("#create-outcome")).to_contain_text("25 tUSD in escrow")
            cid = int(str(page.get_attribute("#created-link", "href")).rsplit("/", 1)[1])
            created = indexed(gateway.client, cid, lambda c: True)
            assert created["prize_wei"] == str(25 * USD) and created["organizer"] == organizer.address
            assert token.functions.balanceOf(organizer.address).call() == 75 * USD
            assert token.functions.balanceOf(started.competitions.address).call() == 25 * USD
            page.click("#created-link")
            expect(page.locator("#competition-prize")).to_contain_text("25 tUSD")
            context.close()
            assert not errors, errors
    finally:
        started.close()
        net.close()
