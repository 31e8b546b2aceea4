"""The three-hospital private-training scenario, end to end, on a real chain.

Deploy; attest and register a trainer and a key manager; three hospitals each list a disjoint
stratified shard of scikit-learn's breast-cancer data (the consumer keeps 20 % as its own
validation set); the consumer creates one job over all three at ε = 1, δ = 1e-5; the dispatcher
hands it to the worker, whose enclave trains with DP-SGD and signs a receipt; the market settles;
providers and the worker withdraw; the consumer decrypts the model and evaluates it on its own
data, next to a non-private baseline trained in the clear on the same shards.

The chain and the scenario's knobs (ε, δ, seed) come from :class:`~marketplace.config.SterlingSettings`
(``network`` and the ``demo`` section); the demo runs only on a local chain (anvil or embedded).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import StratifiedKFold, train_test_split

from enclave_worker.trusted.dataset import DatasetPackage, Schema, join
from enclave_worker.trusted.models import ModelSpec
from marketplace.chain import TxResult, Wei, open_chain
from marketplace.config import NetworkConfig, SterlingSettings
from marketplace.consumer import Consumer
from marketplace.contracts import EPSILON_SCALE, Terms, delta_units, epsilon_units
from marketplace.datasheet import Datasheet
from marketplace.errors import ConfigError
from marketplace.local_training import predict, train_non_private
from marketplace.provider import list_dataset
from oracle.dispatcher import Dispatcher
from sterling.localnet import bring_up

logger = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]

ETHER = 10**18
HOSPITALS = ("St. Mary's", "Northside General", "Lakeview Clinic")
PRICES = (Wei(ETHER // 10), Wei(ETHER * 12 // 100), Wei(ETHER * 15 // 100))
WORKER_FEE = Wei(ETHER // 20)
TERMS_MAX_EPSILON_PER_JOB = 2.0
TERMS_TOTAL_EPSILON = 10.0
TERMS_MAX_DELTA = 1e-4


@dataclass(frozen=True)
class DemoReport:
    """Everything the demo measured; ``to_json`` gives the documented ``--json-out`` keys."""

    chain: str
    job_id: int
    datasets: list[dict[str, Any]]
    epsilon_target: float
    epsilon_spent: float
    delta: float
    dp_accuracy: float
    baseline_accuracy: float
    budget_remaining: dict[str, float]
    payments_wei: dict[str, Any]
    measurement: str
    attestation_format: str
    gas: dict[str, int]
    wall_seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def hospital_datasheet(hospital: str, rows: int) -> Datasheet:
    """What the demo's hospitals say about their shards (docs/datasheets.md)."""
    return Datasheet.from_json({
        "version": 1,
        "title": f"Breast-cancer biopsies, {hospital}",
        "description": (
            f"Fine-needle aspirate biopsies of breast masses at {hospital}: 30 measurements of the cell nuclei per biopsy "
            "(radius, texture, perimeter, area, smoothness, …: mean, standard error and worst value). A shard of the "
            "Wisconsin Diagnostic Breast Cancer data shipped with scikit-learn."
        ),
        "tags": ["health", "oncology", "diagnosis"],
        "license": "CC-BY-4.0",
        "provider_name": hospital,
        "rows": rows,
        "label": {"name": "diagnosis", "description": "malignant or benign, from the pathology report"},
        "provenance": "scikit-learn's load_breast_cancer (UCI), split into three disjoint stratified shards",
        "intended_uses": "diagnostic classifiers trained under differential privacy",
    })  # fmt: skip


def hospital_shards(seed: int) -> tuple[list[DatasetPackage], np.ndarray, np.ndarray]:
    """Breast-cancer data as three disjoint stratified provider shards plus the consumer's 20 % validation split."""
    bunch = load_breast_cancer()
    features = bunch.data.astype(np.float32)
    labels = bunch.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(features, labels, test_size=0.2, stratify=labels, random_state=seed)
    schema = Schema(
        task="classification",
        feature_names=tuple(str(n) for n in bunch.feature_names),
        feature_shape=(features.shape[1],),
        class_names=tuple(str(n) for n in bunch.target_names),
    )
    folds = StratifiedKFold(n_splits=len(HOSPITALS), shuffle=True, random_state=seed)
    shards = [
        DatasetPackage(features=np.ascontiguousarray(x_train[idx]), labels=np.ascontiguousarray(y_train[idx]), schema=schema)
        for _, idx in folds.split(x_train, y_train)
    ]
    return shards, x_val, y_val


def consumer_spec(x_val: np.ndarray, seed: int) -> ModelSpec:
    """The consumer's model: an MLP whose input standardisation comes from the consumer's own data."""
    return ModelSpec(
        architecture="mlp",
        hidden_sizes=(32,),
        input_mean=tuple(float(v) for v in x_val.mean(axis=0)),
        input_scale=tuple(float(v) for v in x_val.std(axis=0) + 1e-6),
        epochs=30,
        batch_size=64,
        learning_rate=0.01,
        optimizer="adam",
        max_grad_norm=1.0,
        accountant="rdp",
        seed=seed,
    )


def demo_network(settings: SterlingSettings) -> NetworkConfig:
    """The network the demo runs on: the selected one, which must be local (anvil or embedded).

    Raises:
        ConfigError: the selected network is an RPC node (the demo funds its accounts from a
            development account and deploys afresh on every run).
    """
    network = settings.chain_network
    if network.kind == "rpc":
        chosen = f"rpc_url {settings.rpc_url} (STERLING_RPC_URL)" if settings.rpc_url else f"the rpc network {network.name!r}"
        raise ConfigError(f"the demo runs on a local chain (anvil or embedded), not on {chosen}")
    return network


def run_demo(settings: SterlingSettings, *, progress: ProgressFn | None = None) -> DemoReport:
    """Run the scenario on the chain ``settings`` select, with their ``demo`` section, and return what it measured.

    Raises:
        ConfigError: the selected network is not local (:func:`demo_network`).

    Example:
        >>> report = run_demo(get_settings(network="embedded"))  # doctest: +SKIP
        >>> report.epsilon_spent <= report.epsilon_target
        True
    """
    network = demo_network(settings)
    config = settings.demo
    started = time.perf_counter()
    say: ProgressFn = progress or (lambda event: None)
    gas: dict[str, int] = {}

    def record(label: str, tx: TxResult) -> TxResult:
        gas[label] = tx.gas_used
        return tx

    with ExitStack() as stack:
        state = config.state_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sterling-demo-")))
        chain = stack.enter_context(open_chain(settings))
        say({"stage": "chain", "detail": f"{network.name} chain id {chain.chain_id}"})

        net = bring_up(chain, state, say=lambda stage, detail: say({"stage": stage, "detail": detail}))
        stack.callback(net.close)
        gas.update(net.gas)
        market, registry, blobs, operator = net.market, net.registry, net.blobs, net.operator
        consumer_account = chain.new_account()
        hospitals = [chain.new_account() for _ in HOSPITALS]

        shards, x_val, y_val = hospital_shards(config.seed)
        listed = []
        for name, account, shard, price in zip(HOSPITALS, hospitals, shards, PRICES, strict=True):
            terms = Terms(
                price_per_job=price,
                max_epsilon_per_job=epsilon_units(TERMS_MAX_EPSILON_PER_JOB),
                total_epsilon_budget=epsilon_units(TERMS_TOTAL_EPSILON),
                max_delta=delta_units(TERMS_MAX_DELTA),
            )
            item = list_dataset(
                shard, account, terms=terms, market=market, registry=registry, key_manager=net.key_manager, blobs=blobs,
                datasheet=hospital_datasheet(name, shard.rows),
            )  # fmt: skip
            record(f"listDataset ({name})", item.tx)
            listed.append(item)
            detail = f"{name}: dataset {item.dataset_id}, {shard.rows} rows, {item.ciphertext_bytes} B ciphertext"
            say({"stage": "listed", "detail": detail})

        consumer = Consumer(consumer_account, market=market, blobs=blobs)
        spec = consumer_spec(x_val, config.seed)
        dataset_ids = [item.dataset_id for item in listed]
        created = consumer.create_job(dataset_ids, spec, epsilon=config.epsilon, delta=config.delta, worker_fee=WORKER_FEE)
        record("createJob", created.tx)
        say({"stage": "job created", "detail": f"job {created.job_id}, escrow {created.escrow / ETHER:.2f} ETH"})

        dispatcher = Dispatcher(market, [net.worker], from_block=net.deployment.block)
        (outcome,) = dispatcher.poll_once(progress=say, strict=True)
        record("claimJob", outcome.claim)
        record("submitResult", outcome.submit)

        provider_payments = []
        for name, account, item in zip(HOSPITALS, hospitals, listed, strict=True):
            amount, tx = market.withdraw(account)
            record(f"withdraw ({name})", tx)
            provider_payments.append({"provider": name, "address": account.address, "dataset_id": item.dataset_id, "amount": amount})
        worker_amount, tx = market.withdraw(operator)
        record("withdraw (worker)", tx)
        consumer_refund = market.pending_withdrawal(consumer_account.address)
        say({"stage": "paid", "detail": f"{len(provider_payments)} providers and the worker withdrew"})

        model = consumer.fetch_model(created.job_id)
        dp_accuracy = float((predict(model, x_val) == y_val).mean())
        baseline = train_non_private(spec, join(shards))
        baseline_accuracy = float((predict(baseline, x_val) == y_val).mean())
        job = market.job(created.job_id)
        report = DemoReport(
            chain=network.name,
            job_id=int(created.job_id),
            datasets=[
                {"dataset_id": int(i.dataset_id), "provider": n, "rows": s.rows, "content_hash": i.content_hash.hex()}
                for n, i, s in zip(HOSPITALS, listed, shards, strict=True)
            ],
            epsilon_target=config.epsilon,
            epsilon_spent=job.epsilon_spent / EPSILON_SCALE,
            delta=config.delta,
            dp_accuracy=dp_accuracy,
            baseline_accuracy=baseline_accuracy,
            budget_remaining={str(i.dataset_id): market.remaining_epsilon(i.dataset_id) / EPSILON_SCALE for i in listed},
            payments_wei={"providers": provider_payments, "worker": int(worker_amount), "consumer_refund": int(consumer_refund)},
            measurement=net.measurement.hex(),
            attestation_format="sim",
            gas=gas,
            wall_seconds=round(time.perf_counter() - started, 2),
        )
    return report
