"""Competitions (issue 16) inside the enclaves: the key manager's test-set deposits, admissions and
releases, and the evaluator's scores, driven through :class:`Enclave` with every request checked by
the protocol schemas first."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_utils import to_canonical_address
from safetensors.torch import save as save_tensors
from sklearn.datasets import load_digits

from enclave_worker.trusted import dataformat, inference, keywrap, ladder, metrics, protocol
from enclave_worker.trusted.competition import Admission, ScoreReceipt, sign, signer_of
from enclave_worker.trusted.dataset import DatasetPackage, Schema, canonical_json
from enclave_worker.trusted.enclave import Enclave
from enclave_worker.trusted.errors import (
    EvaluationRefused,
    KeyReleaseRefused,
    KeyUnwrapFailed,
    ProtocolError,
    SubmissionRefused,
)
from enclave_worker.trusted.evaluation import Rules, class_probabilities, open_submission
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.onchain import Architecture, CompetitionStatus, Metric, Role, Split
from enclave_worker.trusted.receipt import Deposit, DepositSignatureInvalid
from marketplace.competing import seal_submission, seal_test_set
from marketplace.serving import model_weights

CHAIN_ID = 1337
COMPETITIONS = bytes.fromhex("c0" * 20)
COMPETITION = 3
SCHEMA = Schema(
    task="classification",
    feature_names=tuple(f"px{i}" for i in range(64)),
    feature_shape=(64,),
    class_names=tuple(str(d) for d in range(10)),
)
LOGREG = ModelSpec(architecture="logistic_regression", epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0)
MLP = ModelSpec(architecture="mlp", hidden_sizes=(32,), epochs=1, batch_size=32, learning_rate=0.1, max_grad_norm=1.0)


def call(enclave: Enclave, op: str, **fields: Any) -> dict[str, Any]:
    """One request as the trusted process takes it: schema-checked, then handled."""
    op, checked = protocol.validate_request({"v": protocol.PROTOCOL_VERSION, "op": op, **fields})
    return enclave.handle(op, checked, lambda message: None)


def _digits() -> tuple[DatasetPackage, DatasetPackage]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    return (
        DatasetPackage(features=x[:1000], labels=y[:1000], schema=SCHEMA),
        DatasetPackage(features=x[1000:], labels=y[1000:], schema=SCHEMA),
    )


TRAIN, TEST = _digits()


def _weights(spec: ModelSpec, *, steps: int = 150, seed: int = 0, schema: Schema = SCHEMA) -> tuple[torch.nn.Module, bytes]:
    """A model trained a little on the training rows, saved as a Sterling job saves one."""
    torch.manual_seed(seed)
    module = build_model(spec, schema)
    if steps:
        opt = torch.optim.Adam(module.parameters(), lr=0.05)
        x, y = torch.from_numpy(TRAIN.features), torch.from_numpy(TRAIN.labels)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(x), y).backward()
            opt.step()
    module.eval()
    metadata = {
        inference.WEIGHTS_SPEC_KEY: spec.to_bytes().decode(),
        inference.WEIGHTS_SCHEMA_KEY: canonical_json(schema.to_json()).decode(),
    }
    return module, save_tensors({k: v.detach().contiguous() for k, v in module.state_dict().items()}, metadata=metadata)


def rules(**overrides: Any) -> dict[str, Any]:
    return {
        "chain_id": CHAIN_ID, "competitions": COMPETITIONS, "competition_id": COMPETITION,
        "test_set_hash": World.sealed_test.content_hash, "schema_hash": SCHEMA.hash(),
        "metric": int(Metric.ACCURACY), "public_split_bps": 3000, "ladder_step": 10_000, "max_parameters": 0,
        "architectures": int(Architecture.LOGISTIC_REGRESSION | Architecture.MLP),
    } | overrides  # fmt: skip


class World:
    """A key manager holding one competition's test set, an evaluator, an organizer and two participants."""

    km_seal = os.urandom(32)
    km = Enclave(Role.KEY_MANAGER, seal_key=km_seal)
    sealed_test = seal_test_set(TEST, key_manager_key=km.encryption_key, chain_id=CHAIN_ID, competitions=COMPETITIONS)

    def __init__(self) -> None:
        self.evaluator = Enclave(Role.EVALUATOR)
        self.organizer, self.alice, self.mallory = Account.create(), Account.create(), Account.create()
        signature = sign(
            self.organizer,
            self._deposit(self.sealed_test.content_hash, self.sealed_test.wrapped_key),
            chain_id=CHAIN_ID,
            competitions=COMPETITIONS,
        )
        reply = call(self.km, "deposit_test_set", **self.test_set_fields(signature))
        self.test_set_sealed_key = reply["sealed_key"]
        assert reply["schema_hash"] == SCHEMA.hash() and reply["rows"] == TEST.rows

    def _deposit(self, content_hash: bytes, wrapped: bytes) -> Deposit:
        return Deposit(content_hash=content_hash, wrapped_key=wrapped, key_manager=self.km.signer)

    def test_set_fields(self, signature: bytes, **overrides: Any) -> dict[str, Any]:
        return {
            "chain_id": CHAIN_ID, "competitions": COMPETITIONS, "organizer": to_canonical_address(self.organizer.address),
            "wrapped_key": self.sealed_test.wrapped_key, "signature": signature, "ciphertext": self.sealed_test.ciphertext,
        } | overrides  # fmt: skip

    def admit(self, participant: Any, weights: bytes, *, signer: Any = None, sealed: Any = None, **overrides: Any) -> dict[str, Any]:
        sealed = sealed or seal_submission(
            weights, key_manager_key=self.km.encryption_key, chain_id=CHAIN_ID, competitions=COMPETITIONS,
            competition_id=COMPETITION, participant=participant.address,
        )  # fmt: skip
        signature = sign(
            signer or participant, self._deposit(sealed.content_hash, sealed.wrapped_key), chain_id=CHAIN_ID, competitions=COMPETITIONS
        )
        fields = rules() | {
            "competition_status": int(CompetitionStatus.OPEN), "closes_at": 2000, "now": 1000,
            "participant": to_canonical_address(participant.address), "ciphertext": sealed.ciphertext,
            "wrapped_key": sealed.wrapped_key, "signature": signature,
        }  # fmt: skip
        reply = call(self.km, "admit_submission", **(fields | overrides))
        reply["sealed"] = sealed
        return reply

    def release(
        self, participant: Any, admitted: dict[str, Any], *, index: int = 0, split: Split = Split.PUBLIC, **overrides: Any
    ) -> dict[str, Any]:
        fields = rules() | {
            "competition_status": int(CompetitionStatus.OPEN), "organizer": to_canonical_address(self.organizer.address),
            "closes_at": 2000, "now": 1000, "index": index, "split": int(split), "previous_best": 0, "next_public": index,
            "public_scored": False, "private_scored": False, "participant": to_canonical_address(participant.address),
            "submission_hash": admitted["content_hash"], "test_set_sealed_key": self.test_set_sealed_key,
            "submission_sealed_key": admitted["sealed_key"], "evaluator_signer": self.evaluator.signer, "evaluator_active": True,
            "evaluator_key": self.evaluator.encryption_key,
        }  # fmt: skip
        return call(self.km, "release_evaluation", **(fields | overrides))

    def score(
        self,
        admitted: dict[str, Any],
        keys: dict[str, Any],
        *,
        index: int = 0,
        split: Split = Split.PUBLIC,
        previous_best: int = 0,
        **overrides: Any,
    ) -> dict[str, Any]:
        fields = rules() | {
            "index": index, "split": int(split), "previous_best": previous_best, "test_set_key": keys["test_set_key"],
            "test_set": self.sealed_test.ciphertext, "submission_hash": admitted["content_hash"],
            "submission_key": keys["submission_key"], "submission": admitted["sealed"].ciphertext,
        }  # fmt: skip
        return call(self.evaluator, "score", **(fields | overrides))


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, bytes]:
    return _weights(LOGREG)


def _expected(module: torch.nn.Module, split: Split, metric: Metric = Metric.ACCURACY) -> int:
    public = ladder.public_rows(World.sealed_test.content_hash, TEST.rows, 3000)
    rows = public if split is Split.PUBLIC else ~public
    return metrics.to_units(metric, metrics.score(metric, class_probabilities(module, TEST.features[rows]), TEST.labels[rows]))


def test_a_test_set_deposit_needs_its_organizers_signature_and_a_test_set_that_opens() -> None:
    world = World()
    forged = sign(
        world.mallory,
        world._deposit(world.sealed_test.content_hash, world.sealed_test.wrapped_key),
        chain_id=CHAIN_ID,
        competitions=COMPETITIONS,
    )
    with pytest.raises(DepositSignatureInvalid, match="test-set deposit is not signed by"):
        call(world.km, "deposit_test_set", **world.test_set_fields(forged))
    other_market = sign(
        world.organizer,
        world._deposit(world.sealed_test.content_hash, world.sealed_test.wrapped_key),
        chain_id=CHAIN_ID,
        competitions=bytes(20),
    )
    with pytest.raises(DepositSignatureInvalid):
        call(world.km, "deposit_test_set", **world.test_set_fields(other_market))
    # the key wrapped for another competition market does not open here
    elsewhere = seal_test_set(TEST, key_manager_key=world.km.encryption_key, chain_id=CHAIN_ID, competitions=bytes(20))
    signature = sign(
        world.organizer, world._deposit(elsewhere.content_hash, elsewhere.wrapped_key), chain_id=CHAIN_ID, competitions=COMPETITIONS
    )
    with pytest.raises(KeyUnwrapFailed):
        call(
            world.km,
            "deposit_test_set",
            **world.test_set_fields(signature, wrapped_key=elsewhere.wrapped_key, ciphertext=elsewhere.ciphertext),
        )


def test_admission_signs_what_the_chain_takes_and_refuses_copies_and_rule_breakers(trained: tuple[torch.nn.Module, bytes]) -> None:
    world = World()
    _, weights = trained
    admitted = world.admit(world.alice, weights)
    assert admitted["weights_hash"] == hashlib.sha256(weights).digest()
    admission = Admission(COMPETITION, to_canonical_address(world.alice.address), admitted["content_hash"], admitted["weights_hash"])
    assert signer_of(admission, admitted["admission"], chain_id=CHAIN_ID, competitions=COMPETITIONS) == world.km.signer
    # Mallory copies Alice's ciphertext and wrapped key and signs them as hers: the key does not open under her name
    with pytest.raises(KeyUnwrapFailed):
        world.admit(world.mallory, weights, sealed=admitted["sealed"])
    # ... nor can she have it admitted in Alice's name without Alice's signature
    with pytest.raises(DepositSignatureInvalid, match="submission is not signed by"):
        world.admit(world.alice, weights, signer=world.mallory, sealed=admitted["sealed"])
    with pytest.raises(SubmissionRefused, match="window closed"):
        world.admit(world.alice, weights, now=2000)
    with pytest.raises(SubmissionRefused, match="not open"):
        world.admit(world.alice, weights, competition_status=int(CompetitionStatus.CLOSED))
    with pytest.raises(SubmissionRefused, match="allows mlp, not logistic_regression"):
        world.admit(world.alice, weights, architectures=int(Architecture.MLP))
    with pytest.raises(SubmissionRefused, match="650 parameters, competition 3 allows at most 649"):
        world.admit(world.alice, weights, max_parameters=649)
    other_schema = Schema(task="classification", feature_names=SCHEMA.feature_names, feature_shape=(64,), class_names=tuple("abcdefghij"))
    with pytest.raises(SubmissionRefused, match="input schema"):
        world.admit(world.alice, _weights(LOGREG, steps=0, schema=other_schema)[1])
    bare = save_tensors({k: v.contiguous() for k, v in build_model(LOGREG, SCHEMA).state_dict().items()})
    with pytest.raises(SubmissionRefused, match="no valid spec"):
        world.admit(world.alice, bare)


def test_a_public_score_is_the_ladders_and_a_scoring_happens_against_one_best_only(trained: tuple[torch.nn.Module, bytes]) -> None:
    world = World()
    module, weights = trained
    admitted = world.admit(world.alice, weights)
    with pytest.raises(KeyReleaseRefused, match="submission 0 is next, not 1"):
        world.release(world.alice, admitted, index=1, next_public=0)
    with pytest.raises(KeyReleaseRefused, match="not an active evaluator"):
        world.release(world.alice, admitted, evaluator_active=False)
    with pytest.raises(KeyReleaseRefused, match="has its public score"):
        world.release(world.alice, admitted, public_scored=True)
    with pytest.raises(KeyReleaseRefused, match="admitted for"):  # the chain names another participant for this index
        world.release(world.mallory, admitted)
    keys = world.release(world.alice, admitted)
    reply = world.score(admitted, keys)
    exact = _expected(module, Split.PUBLIC)
    assert exact > 800_000  # the model learned something
    assert reply["receipt"]["score"] == ladder.ladder_step(Metric.ACCURACY, exact, 0, 10_000)
    assert reply["receipt"]["score"] % 10_000 == 0 and abs(reply["receipt"]["score"] - exact) <= 5_000
    receipt = ScoreReceipt(
        COMPETITION,
        0,
        admitted["content_hash"],
        World.sealed_test.content_hash,
        int(Metric.ACCURACY),
        Split.PUBLIC,
        reply["receipt"]["score"],
        0,
    )
    assert signer_of(receipt, reply["signature"], chain_id=CHAIN_ID, competitions=COMPETITIONS) == world.evaluator.signer
    assert reply["rows"] == int(ladder.public_rows(World.sealed_test.content_hash, TEST.rows, 3000).sum())
    # asked again against the same best: the same keys, the same receipt; against another best: refused, by both enclaves
    assert world.score(admitted, world.release(world.alice, admitted)) == reply
    with pytest.raises(KeyReleaseRefused, match="against best 0, not 5"):
        world.release(world.alice, admitted, previous_best=5)
    with pytest.raises(EvaluationRefused, match="one submission, one score per split"):
        world.score(admitted, keys, previous_best=5)
    # keys released for one scoring do not open for another (another split, another submission index)
    with pytest.raises(KeyUnwrapFailed):
        world.score(admitted, keys, index=1)


def test_a_private_score_is_exact_and_comes_only_after_the_close(trained: tuple[torch.nn.Module, bytes]) -> None:
    world = World()
    module, weights = trained
    admitted = world.admit(world.alice, weights)
    with pytest.raises(KeyReleaseRefused, match="private split is scored from 2000 on"):
        world.release(world.alice, admitted, split=Split.PRIVATE)
    keys = world.release(world.alice, admitted, split=Split.PRIVATE, now=2000)
    reply = world.score(admitted, keys, split=Split.PRIVATE)
    assert reply["receipt"]["score"] == _expected(module, Split.PRIVATE)
    assert reply["receipt"]["previous_best"] == 0 and reply["receipt"]["split"] == int(Split.PRIVATE)
    with pytest.raises(ProtocolError, match="previous_best 0"):
        world.release(world.alice, admitted, split=Split.PRIVATE, now=2000, previous_best=1)


def test_every_metric_scores_as_the_reference_does(trained: tuple[torch.nn.Module, bytes]) -> None:
    module, weights = trained
    for metric in Metric:
        world = World()
        admitted = world.admit(world.alice, weights, metric=int(metric))
        keys = world.release(world.alice, admitted, split=Split.PRIVATE, now=2000, metric=int(metric))
        assert world.score(admitted, keys, split=Split.PRIVATE, metric=int(metric))["receipt"]["score"] == _expected(
            module, Split.PRIVATE, metric
        )


def test_only_a_paying_buyer_gets_the_model_key_and_only_after_the_close(trained: tuple[torch.nn.Module, bytes]) -> None:
    world = World()
    _, weights = trained
    admitted = world.admit(world.alice, weights)
    buyer = X25519PrivateKey.generate()

    def purchase(**overrides: Any) -> dict[str, Any]:
        fields = {
            "chain_id": CHAIN_ID, "competitions": COMPETITIONS, "competition_id": COMPETITION,
            "competition_status": int(CompetitionStatus.CLOSED), "index": 0, "participant": to_canonical_address(world.alice.address),
            "submission_hash": admitted["content_hash"], "buyer": to_canonical_address(world.organizer.address),
            "buyer_key": keywrap.public_key_bytes(buyer), "submission_sealed_key": admitted["sealed_key"],
        }  # fmt: skip
        return call(world.km, "release_purchase", **(fields | overrides))

    with pytest.raises(KeyReleaseRefused, match="not closed"):
        purchase(competition_status=int(CompetitionStatus.OPEN))
    with pytest.raises(KeyReleaseRefused, match="has not bought"):
        purchase(buyer_key=bytes(32))
    wrapped = purchase()["released_key"]
    info = keywrap.purchase_info(
        CHAIN_ID, COMPETITIONS, COMPETITION, 0, to_canonical_address(world.organizer.address), admitted["content_hash"]
    )
    key = keywrap.unwrap(wrapped, buyer, info=info)
    opened = dataformat.decrypt_bytes(admitted["sealed"].ciphertext, key, kind=dataformat.Kind.MODEL)
    assert opened == weights
    with pytest.raises(KeyUnwrapFailed):  # bound to its buyer: nobody else unwraps it as theirs
        keywrap.unwrap(
            wrapped, buyer, info=keywrap.purchase_info(CHAIN_ID, COMPETITIONS, COMPETITION, 0, bytes(20), admitted["content_hash"])
        )


def test_only_an_evaluator_scores_and_only_a_key_manager_admits() -> None:
    trainer = Enclave(Role.TRAINER)
    with pytest.raises(ProtocolError, match="not served by a trainer enclave"):
        call(
            trainer,
            "score",
            **rules(),
            index=0,
            split=1,
            previous_best=0,
            test_set_key=b"",
            test_set=b"",
            submission_hash=bytes(32),
            submission_key=b"",
            submission=b"",
        )
    with pytest.raises(ProtocolError, match="not served by a evaluator enclave|not served by an evaluator enclave"):
        call(
            Enclave(Role.EVALUATOR), "release_purchase", chain_id=1, competitions=COMPETITIONS, competition_id=1,
            competition_status=2, index=0, participant=bytes(20), submission_hash=bytes(32), buyer=bytes(20),
            buyer_key=bytes(32), submission_sealed_key=b"",
        )  # fmt: skip


def test_open_submission_refuses_other_tasks_and_architectures_without_a_bit() -> None:
    module, _ = _weights(MLP, steps=0)
    r = Rules.from_fields(rules(architectures=int(Architecture.MLP)))
    regression = Schema(task="regression", feature_names=SCHEMA.feature_names, feature_shape=SCHEMA.feature_shape,
                        target_names=("y",), target_bounds=((0, 1),))  # fmt: skip
    with pytest.raises(SubmissionRefused, match="competitions score classifiers' probabilities; the model is a regression model"):
        open_submission(model_weights(module, MLP, regression), rules=r)
    resnet = ModelSpec(architecture="resnet", depth=8, epochs=1, batch_size=8, learning_rate=0.1, max_grad_norm=1.0)
    with pytest.raises(SubmissionRefused, match="competitions take logistic_regression, mlp, cnn models; resnet has no bit"):
        open_submission(model_weights(module, resnet, SCHEMA), rules=r)


def test_open_submission_counts_parameters_as_the_rules_say() -> None:
    module, weights = _weights(MLP, steps=0)
    r = Rules.from_fields(rules(architectures=int(Architecture.MLP)))
    built, schema = open_submission(weights, rules=r)
    assert schema == SCHEMA
    assert sum(p.numel() for p in built.parameters()) == 64 * 32 + 32 + 32 * 10 + 10
