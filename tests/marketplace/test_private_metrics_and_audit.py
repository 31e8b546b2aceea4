"""A job's DP training statistics and privacy audit: ε counted on-chain, bound into the receipt."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE, JobStatus, delta_units, epsilon_units
from marketplace.errors import CiphertextTampered, InvalidModelSpec
from sterling.localnet import LocalNet
from marketplace.provider import list_dataset
from tests.conftest import toy_package, toy_spec, toy_terms


def _listed(net: LocalNet, seed: int, rows: int = 400) -> tuple[int, np.ndarray]:
    package = toy_package(rows, seed)
    listed = list_dataset(
        package, net.chain.new_account(), terms=toy_terms(max_epsilon=3.0),
        market=net.market, registry=net.registry, key_manager=net.key_manager, blobs=net.blobs,
    )
    return listed.dataset_id, np.bincount(package.labels, minlength=2)


def test_private_metrics_and_audit_are_released_with_their_epsilon_counted(localnet: LocalNet) -> None:
    net = localnet
    dataset_id, true_counts = _listed(net, 21)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    spec = toy_spec(
        epochs=4, private_metrics=("class_counts", "train_accuracy", "train_loss"), metrics_epsilon=0.6, audit_canaries=200
    )
    created = consumer.create_job([dataset_id], spec, epsilon=2.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.worker.run_job(created.job_id)
    job = net.market.job(created.job_id)
    assert job.status is JobStatus.COMPLETED

    metrics = consumer.fetch_metrics(created.job_id)
    # The receipt's ε is training plus metrics, rounded up, and never above the job's ε.
    assert metrics["epsilon_training"] <= 2.0 - 0.6
    assert job.epsilon_spent == epsilon_units_up(metrics["epsilon_training"]) + epsilon_units(0.6)
    assert job.epsilon_spent <= 2 * EPSILON_SCALE
    assert net.market.remaining_epsilon(dataset_id) == 10 * EPSILON_SCALE - job.epsilon_spent

    private = metrics["private_metrics"]
    assert private["epsilon"] == 0.6 and private["rows"] == 400
    released = private["metrics"]
    assert set(released) == {"class_counts", "train_accuracy", "train_loss"}
    assert all(m["epsilon"] == pytest.approx(0.2) for m in released.values())
    # Discrete Laplace with scale 5 per count: |noise| < 60 except with probability ~1e-5.
    counts = released["class_counts"]["value"]
    assert len(counts) == 2 and all(abs(c - t) < 60 for c, t in zip(counts, true_counts, strict=True))
    assert 0.0 <= released["train_accuracy"]["value"] <= 1.0
    assert 0.0 <= released["train_loss"]["value"] <= 10.0

    audit = metrics["privacy_audit"]
    assert audit["canaries"] == 200 and audit["guesses"] == 50 and 0 <= audit["correct"] <= 50
    assert audit["epsilon_target"] == metrics["epsilon_training"]
    # A lower bound above the accountant's ε would mean the training is not as private as claimed.
    assert audit["epsilon_lower_bound"] <= metrics["epsilon_training"]
    assert audit["seed"] is None  # the coin flips stay inside the enclave


def epsilon_units_up(epsilon: float) -> int:
    units = int(epsilon * EPSILON_SCALE)
    return units if units >= epsilon * EPSILON_SCALE else units + 1


def test_without_private_metrics_the_document_releases_no_statistic(localnet: LocalNet) -> None:
    net = localnet
    dataset_id, _ = _listed(net, 22, rows=100)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    net.worker.run_job(created.job_id)
    metrics = consumer.fetch_metrics(created.job_id)
    assert metrics["private_metrics"] is None and metrics["privacy_audit"] is None
    assert metrics["epsilon_spent"] == metrics["epsilon_training"]


def test_a_metrics_epsilon_that_leaves_none_for_training_is_refused_before_anything_is_spent(localnet: LocalNet) -> None:
    net = localnet
    dataset_id, _ = _listed(net, 23, rows=100)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    greedy = toy_spec(private_metrics=("class_counts",), metrics_epsilon=1.0)
    with pytest.raises(InvalidModelSpec, match="leaves no ε for training"):
        consumer.create_job([dataset_id], greedy, epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    assert net.market.remaining_epsilon(dataset_id) == 10 * EPSILON_SCALE

    # A job created around the client check is refused by the worker before claiming.
    spec_hash = bytes.fromhex(net.blobs.put(greedy.to_bytes()))
    account = net.chain.new_account()
    now = net.chain.now()
    job_id, _ = net.market.create_job(
        account, dataset_ids=[dataset_id], model_spec_hash=spec_hash, epsilon=epsilon_units(1.0), delta=delta_units(1e-5),
        consumer_key=bytes(32), worker_fee=0, claim_deadline=now + 3600, completion_deadline=now + 7200,  # type: ignore[arg-type]
    )
    with pytest.raises(InvalidModelSpec, match="leaves no ε for training"):
        net.worker.run_job(job_id)
    assert net.market.job(job_id).status is JobStatus.OPEN
    assert net.key_manager.audit_log(content_hash=net.market.dataset(dataset_id).content_hash) == []


def test_fetched_metrics_are_checked_against_the_receipt(localnet: LocalNet) -> None:
    net = localnet
    dataset_id, _ = _listed(net, 24, rows=100)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=0)  # type: ignore[arg-type]
    outcome = net.worker.run_job(created.job_id)
    digest = hashlib.sha256(outcome.metrics).hexdigest()
    path = net.blobs.path(digest)
    path.write_bytes(outcome.metrics.replace(b'"epochs":1', b'"epochs":9'))
    with pytest.raises(CiphertextTampered):
        consumer.fetch_metrics(created.job_id)
