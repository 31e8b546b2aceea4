"""The key manager's model-key and competition-key sides behind ``sterling keymanager``'s HTTP
routes, used through :class:`RemoteModelKeys` and :class:`RemoteCompetitionKeys` exactly as the
in-process services are used: the same results, the same refusals with the same messages.

The node is served on a loopback port over the session's key manager (embedded chain); the
inference and evaluator hosts are real ones whose key manager is the HTTP client: an inference
enclave loads a model whose key came over HTTP, and an evaluator enclave scores a submission whose
keys did, its score accepted on-chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from enclave_worker.audit import MODEL_RELEASE
from enclave_worker.competition_keys import CompetitionKeyService
from enclave_worker.evaluator import EvaluatorService
from enclave_worker.keymanager import KeyManagerService
from enclave_worker.model_keys import ModelKeyService
from enclave_worker.remote import NotServed, ServiceRequestInvalid, ServiceUnreachable
from enclave_worker.remote_keys import CompetitionKeyHost, ModelKeyHost, RemoteCompetitionKeys, RemoteModelKeys
from enclave_worker.serving import InferenceService
from enclave_worker.trusted.competition import sign
from enclave_worker.trusted.errors import SubmissionRefused
from enclave_worker.trusted.models import build_model
from enclave_worker.trusted.onchain import Architecture, Metric, OutputPolicy, PurchasePolicy, Split
from enclave_worker.trusted.receipt import Deposit, DepositExists
from marketplace.chain import Wei, free_port
from marketplace.competing import BlobCompetitionStore, Rules, open_competition, seal_test_set, submit_model
from marketplace.competitions import CompetitionTerms
from marketplace.consumer import Consumer
from marketplace.errors import JobNotReady, KeyReleaseRefused
from marketplace.inference import sign_model_deposit
from marketplace.provider import list_dataset
from marketplace.serving import BlobModelStore, list_model, model_weights
from sterling.keymanager_service import KeyManagerNode, get_settings, served, started_node
from sterling.localnet import LocalCompetitions, LocalNet, LocalServing, start_competitions, start_serving
from sterling.standalone import ChainView
from tests.conftest import TOY_SCHEMA, toy_package, toy_spec, toy_terms


@dataclasses.dataclass(frozen=True)
class Served:
    url: str
    node: KeyManagerNode


def _view(net: LocalNet) -> ChainView:
    return ChainView(net.chain, net.deployment, net.market, net.registry)


def _km(net: LocalNet) -> KeyManagerService:
    """The session's key manager, in this process (what a ``sterling keymanager`` node serves)."""
    assert isinstance(net.key_manager, KeyManagerService)
    return net.key_manager


@pytest.fixture(scope="module")
def serving(localnet: LocalNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServing]:
    started = start_serving(localnet, tmp_path_factory.mktemp("remote-keys-serving"))
    yield started
    started.close()


@pytest.fixture(scope="module")
def contest(localnet: LocalNet) -> Iterator[LocalCompetitions]:
    started = start_competitions(localnet)
    yield started
    started.close()


@pytest.fixture(scope="module")
def full(localnet: LocalNet, serving: LocalServing, contest: LocalCompetitions) -> Iterator[Served]:
    """A node with all three sides, as ``sterling keymanager`` builds it for a deployment with both markets."""
    km = _km(localnet)
    node = KeyManagerNode(
        view=_view(localnet), key_manager=km, verifier=localnet.verifier,
        model_keys=ModelKeyService(km, serving.model_market, blobs=localnet.blobs),
        competition_keys=CompetitionKeyService(km, contest.competitions, blobs=localnet.blobs),
    )  # fmt: skip
    with served(node, port=free_port()) as url:
        yield Served(url, node)


@pytest.fixture(scope="module")
def bare(localnet: LocalNet) -> Iterator[Served]:
    """A node with the trainer side only (a deployment record without the two markets)."""
    node = KeyManagerNode(view=_view(localnet), key_manager=_km(localnet), verifier=localnet.verifier)
    with served(node, port=free_port()) as url:
        yield Served(url, node)


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(call: Any) -> BaseException:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - the class is what the test compares
        call()
    return raised.value


def test_a_model_deposited_over_http_is_released_to_a_registered_inference_enclave(
    localnet: LocalNet, serving: LocalServing, full: Served, tmp_path: Path
) -> None:
    net, local = localnet, full.node.model_keys
    assert local is not None
    with RemoteModelKeys(full.url) as keys:
        assert isinstance(keys, ModelKeyHost) and isinstance(local, ModelKeyHost)
        assert keys.signer == net.key_manager.signer and keys.model_market == serving.model_market.address
        spec = toy_spec()
        weights = model_weights(build_model(spec, TOY_SCHEMA), spec, TOY_SCHEMA)
        owner = net.chain.new_account()
        listed = list_model(
            weights, spec, owner, price_per_query=10**12, output_policy=OutputPolicy.LABEL, output_param=0, query_cap=100,
            model_market=serving.model_market, registry=net.registry, key_manager=keys, store=BlobModelStore(net.blobs),
        )  # fmt: skip
        assert listed.sealed is not None
        sealed = local.deposit_path(listed.sealed.content_hash, owner.address)
        assert sealed.is_file()
        before = sealed.read_bytes()

        # A second deposit is refused as the in-process service refuses it: same class, same message; the first stays.
        signature = sign_model_deposit(
            owner, listed.sealed.content_hash, listed.sealed.wrapped_key, key_manager=keys.signer, chain_id=net.chain.chain_id,
            model_market=serving.model_market.address,
        )  # fmt: skip
        again = (listed.sealed.content_hash, listed.sealed.wrapped_key)
        remote = _refused(lambda: keys.deposit(*again, owner=owner.address, signature=signature))
        in_process = _refused(lambda: local.deposit(*again, owner=owner.address, signature=signature))
        assert type(remote) is type(in_process) is DepositExists
        assert str(remote) == str(in_process) == f"owner {owner.address} already deposited a key for model ciphertext {again[0].hex()}"
        assert sealed.read_bytes() == before

        # Released to an enclave the registry does not know: refused, with the in-process message.
        stranger = net.chain.new_account().address
        remote = _refused(lambda: keys.release(model_id=listed.model_id, enclave=stranger))
        in_process = _refused(lambda: local.release(model_id=listed.model_id, enclave=stranger))
        assert isinstance(remote, KeyReleaseRefused) and type(remote) is type(in_process) and str(remote) == str(in_process)
        assert str(remote) == f"enclave {stranger} is not an active inference enclave in the registry"

        # A real inference host whose key manager is the HTTP client: its enclave opens the released key and loads the model.
        host = InferenceService(
            serving.inference.enclave, model_market=serving.model_market, registry=net.registry, key_manager=keys, blobs=net.blobs,
            state_dir=tmp_path / "inference",
        )  # fmt: skip
        try:
            loaded = host.ensure_loaded(listed.model_id)
        finally:
            host.close()
        assert loaded.record.terms.content_hash == listed.sealed.content_hash
        released = _km(net).audit_log(content_hash=listed.sealed.content_hash, kinds=(MODEL_RELEASE,))
        assert [(e.released, e.trainer, e.dataset_id) for e in released] == [
            (False, stranger, listed.model_id), (False, stranger, listed.model_id), (True, serving.inference.signer, listed.model_id)
        ]  # fmt: skip


def _terms(now: int) -> CompetitionTerms:
    return CompetitionTerms(
        test_set_hash=bytes(32), schema_hash=bytes(32), rules_hash=bytes(32), prize=Wei(10**15), metric=Metric.ACCURACY,
        public_split_bps=3000, ladder_step=10_000, opens_at=now, closes_at=now + 3600, scoring_period=3600, submission_cap=4,
        max_parameters=5000, architectures=Architecture.LOGISTIC_REGRESSION | Architecture.MLP, purchase_policy=PurchasePolicy.ORGANIZER,
    )  # fmt: skip


def test_a_competition_runs_on_the_key_managers_http_routes(localnet: LocalNet, contest: LocalCompetitions, full: Served) -> None:
    net, market, local = localnet, contest.competitions, full.node.competition_keys
    assert local is not None
    store = BlobCompetitionStore(net.blobs)
    with RemoteCompetitionKeys(full.url) as keys:
        assert isinstance(keys, CompetitionKeyHost) and isinstance(local, CompetitionKeyHost)
        assert keys.signer == net.key_manager.signer and keys.competitions == market.address
        sdk: dict[str, Any] = {"competitions": market, "registry": net.registry, "key_manager": keys, "blobs": store}

        # The organizer's test set, deposited over HTTP: the key manager opened it (its schema and rows).
        organizer, participant = net.chain.new_account(), net.chain.new_account()
        test_set = toy_package(200, 5)
        opened = open_competition(organizer, test_set, terms=_terms(net.chain.now()), rules=Rules(title="remote keys"), **sdk)
        cid = opened.competition_id
        assert opened.test_set.rows == 200 and opened.test_set.schema_hash == TOY_SCHEMA.hash()
        assert local.test_set_path(opened.test_set.content_hash, organizer.address).is_file()
        resealed = seal_test_set(
            test_set, key_manager_key=net.registry.active_key_manager_key(keys.signer), chain_id=net.chain.chain_id,
            competitions=market.address,
        )  # fmt: skip
        net.blobs.put(resealed.ciphertext)
        deposit = Deposit(resealed.content_hash, resealed.wrapped_key, bytes.fromhex(keys.signer[2:]))
        signature = sign(organizer, deposit, chain_id=net.chain.chain_id, competitions=market.address_bytes)
        first = keys.deposit_test_set(resealed.content_hash, resealed.wrapped_key, organizer=organizer.address, signature=signature)
        remote = _refused(lambda: keys.deposit_test_set(resealed.content_hash, resealed.wrapped_key, organizer=organizer.address,
                                                        signature=signature))  # fmt: skip
        in_process = _refused(lambda: local.deposit_test_set(resealed.content_hash, resealed.wrapped_key, organizer=organizer.address,
                                                             signature=signature))  # fmt: skip
        assert first.rows == 200 and type(remote) is type(in_process) is DepositExists and str(remote) == str(in_process)

        # A participant's model, admitted over HTTP and submitted on-chain: the chain accepts the admission.
        spec = toy_spec()
        entry = submit_model(participant, model_weights(build_model(spec, TOY_SCHEMA), spec, TOY_SCHEMA), competition_id=cid,
                             ask_price=0, **sdk)  # fmt: skip
        assert entry.index == 0 and market.submission(cid, 0).participant == participant.address

        # Before the close, no buyer gets a key: the in-process refusal, word for word.
        remote = _refused(lambda: keys.release_purchase(cid, 0, buyer=organizer.address))
        in_process = _refused(lambda: local.release_purchase(cid, 0, buyer=organizer.address))
        assert type(remote) is type(in_process) is KeyReleaseRefused and str(remote) == str(in_process)

        # A real evaluator host whose keys come over HTTP scores the entry; the chain takes its score.
        evaluator = EvaluatorService(
            contest.evaluator.enclave, competitions=market, registry=net.registry, keys=keys, blobs=net.blobs, operator=contest.operator
        )
        posted = evaluator.score(cid, 0, Split.PUBLIC)
        assert posted.previous_best == 0 and market.competition(cid).next_public == 1 and market.submission(cid, 0).public_scored
        # ... once: a second release for the same scoring is refused, as in process.
        remote = _refused(lambda: keys.release_evaluation(cid, 0, Split.PUBLIC, evaluator=evaluator.signer))
        in_process = _refused(lambda: local.release_evaluation(cid, 0, Split.PUBLIC, evaluator=evaluator.signer))
        assert type(remote) is type(in_process) is KeyReleaseRefused and str(remote) == str(in_process)

        # A model whose ciphertext was never uploaded is refused admission, as in process.
        missing = (cid, b"\x44" * 32, b"\x01" * 80)
        remote = _refused(lambda: keys.admit(*missing, participant=participant.address, signature=b"\x02" * 65))
        in_process = _refused(lambda: local.admit(*missing, participant=participant.address, signature=b"\x02" * 65))
        assert type(remote) is type(in_process) is SubmissionRefused and str(remote) == str(in_process)
        assert str(remote) == f"no model ciphertext {'44' * 32} in the blob store: upload it first"


def test_a_jobs_model_is_taken_for_serving_and_admitted_over_http(localnet: LocalNet, contest: LocalCompetitions, full: Served) -> None:
    net = localnet
    provider = net.chain.new_account()
    listed = list_dataset(toy_package(120, 21), provider, terms=toy_terms(), market=net.market, registry=net.registry,
                          key_manager=net.key_manager, blobs=net.blobs)  # fmt: skip
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    km_key = net.registry.active_key_manager_key(net.key_manager.signer)
    job = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=0, seal_to=km_key).job_id  # type: ignore[arg-type]
    organizer = net.chain.new_account()
    opened = open_competition(
        organizer, toy_package(100, 22), terms=_terms(net.chain.now()), rules=Rules(title="a job's model"),
        competitions=contest.competitions, registry=net.registry, key_manager=contest.keys, blobs=BlobCompetitionStore(net.blobs),
    )  # fmt: skip
    with RemoteModelKeys(full.url) as models, RemoteCompetitionKeys(full.url) as competitions:
        # Not completed yet: JobNotReady from both sides, with the in-process message.
        for call in (lambda: models.deposit_from_job(job), lambda: competitions.admit_job_model(opened.competition_id, job)):
            with pytest.raises(JobNotReady, match=f"^job {job} is OPEN, not COMPLETED$"):
                call()
        net.worker.run_job(job)
        model_hash = net.market.result_submitted(job).model_hash
        taken = models.deposit_from_job(job)
        assert (taken.job_id, taken.weights_hash, taken.owner) == (job, model_hash, consumer.account.address)
        assert net.blobs.has(taken.content_hash.hex())
        with pytest.raises(DepositExists, match=f"^job {job}'s model was taken for serving already$"):
            models.deposit_from_job(job)
        admitted = competitions.admit_job_model(opened.competition_id, job)
        assert admitted.participant == consumer.account.address and admitted.weights_hash == model_hash and len(admitted.admission) == 65
        assert competitions.admit_job_model(opened.competition_id, job) == admitted  # a repeat returns the same admission


def test_a_key_manager_without_the_markets_says_so(localnet: LocalNet, bare: Served, full: Served) -> None:
    info = httpx.get(f"{bare.url}/info", timeout=10).json()
    assert info["model_market"] is None and info["competitions"] is None
    served_info = httpx.get(f"{full.url}/info", timeout=10).json()
    assert served_info["model_market"] == localnet.deployment.model_market
    assert served_info["competitions"] == localnet.deployment.competitions
    h32, sig, address = H32, SIG, ADDRESS
    for path, body, market in (
        ("/model-deposits", {"content_hash": h32, "wrapped_key": "0x01", "owner": address, "signature": sig}, "model market"),
        ("/job-models", {"job_id": 1}, "model market"),
        ("/model-releases", {"model_id": 1, "enclave": address}, "model market"),
        ("/test-set-deposits", {"content_hash": h32, "wrapped_key": "0x01", "organizer": address, "signature": sig}, "competition market"),
        ("/admissions", {"competition_id": 1, "content_hash": h32, "wrapped_key": "0x01", "participant": address, "signature": sig},
         "competition market"),
        ("/job-admissions", {"competition_id": 1, "job_id": 1}, "competition market"),
        ("/evaluation-releases", {"competition_id": 1, "index": 0, "split": "public", "evaluator": address}, "competition market"),
        ("/purchase-releases", {"competition_id": 1, "index": 0, "buyer": address}, "competition market"),
    ):  # fmt: skip
        answer = httpx.post(f"{bare.url}{path}", json=body, timeout=10)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json() == {"error": "NotServed", "detail": f"this key manager serves no {market}"}
    with pytest.raises(NotServed, match=f"^the key manager at {bare.url} serves no model market$"):
        RemoteModelKeys(bare.url)
    with pytest.raises(NotServed, match=f"^the key manager at {bare.url} serves no competition market$"):
        RemoteCompetitionKeys(bare.url)


H32, SIG, ADDRESS = "0x" + "11" * 32, "0x" + "22" * 65, "0x" + "33" * 20
MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("/model-deposits", {"content_hash": H32[:-2], "wrapped_key": "0x01", "owner": ADDRESS, "signature": SIG}),
    ("/job-models", {"job_id": 1, "copy": {"content_hash": H32, "wrapped_key": "0x", "signature": SIG}}),
    ("/model-releases", {"model_id": -1, "enclave": ADDRESS}),
    ("/test-set-deposits", {"content_hash": H32, "wrapped_key": "0x01", "organizer": ADDRESS, "signature": SIG[:-2]}),
    ("/admissions", {"competition_id": 1, "content_hash": H32, "wrapped_key": "0x" + "ab" * 513, "participant": ADDRESS, "signature": SIG}),
    ("/job-admissions", {"competition_id": 1, "job_id": 2**256}),
    ("/evaluation-releases", {"competition_id": 1, "index": 0, "split": "both", "evaluator": ADDRESS}),
    ("/purchase-releases", {"competition_id": 1, "index": "0", "buyer": ADDRESS}),
]


@pytest.mark.parametrize(("path", "body"), MALFORMED)
def test_a_malformed_request_to_a_side_is_refused_before_it_reaches_the_key_manager(
    localnet: LocalNet, full: Served, path: str, body: dict[str, Any]
) -> None:
    before = _files(_km(localnet).state_dir)
    answer = httpx.post(f"{full.url}{path}", json=body, timeout=10)
    assert answer.status_code == 422 and answer.json()["error"] == "RequestInvalid" and answer.json()["detail"], answer.text
    assert _files(_km(localnet).state_dir) == before


def test_the_clients_raise_what_the_service_answered(full: Served) -> None:
    malformed = "POST /model-releases refused the request as malformed"
    with RemoteModelKeys(full.url) as keys, pytest.raises(ServiceRequestInvalid, match=malformed):
        keys.release(model_id=-1, enclave="0x" + "33" * 20)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServiceUnreachable, match=f"key manager at {url} did not answer GET /info"):
        RemoteCompetitionKeys(url, timeout=2)


def test_the_process_serves_the_sides_its_deployment_record_names(localnet: LocalNet, tmp_path: Path) -> None:
    """``started_node`` (what ``sterling keymanager`` runs) builds the model-key side for a record
    naming a model market, over ``--blobs`` (default ``<state-dir>/blobs``), and no competition side
    for a record without a competition market."""
    assert localnet.deployment.model_market is not None
    record = dataclasses.replace(localnet.deployment, competitions=None)
    view = ChainView(localnet.chain, record, localnet.market, localnet.registry)
    verifier = localnet.verifier.signer
    settings = get_settings(
        state_dir=tmp_path / "km", blobs=tmp_path / "shared-blobs", operator_key=localnet.chain.new_account().key.hex(),
        verifier_key=verifier.key.hex(),
    )  # fmt: skip
    assert get_settings(state_dir=tmp_path / "km").blob_dir == tmp_path / "km" / "blobs"
    with started_node(view, settings) as node:
        assert node.competition_keys is None and node.model_keys is not None
        assert node.model_keys.model_market.address == localnet.deployment.model_market
        assert node.model_keys.blobs is not None and node.model_keys.blobs.root == tmp_path / "shared-blobs"
        with served(node, port=free_port()) as url:
            info = httpx.get(f"{url}/info", timeout=10).json()
            assert (info["model_market"], info["competitions"]) == (localnet.deployment.model_market, None)
            with RemoteModelKeys(url) as keys:
                assert keys.signer == node.key_manager.signer != localnet.key_manager.signer
            with pytest.raises(NotServed, match="serves no competition market"):
                RemoteCompetitionKeys(url)
