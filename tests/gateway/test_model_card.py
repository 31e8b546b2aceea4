"""Model cards and portable models: the gateway's card, ``sterling model card`` and ``sterling model fetch`` (weights, card, ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from marketplace.chain import free_port
from marketplace.consumer import Consumer
from marketplace.model_card import CARD_FORMAT, build_card
from sterling.cli import app as cli
from tests.conftest import toy_spec
from tests.gateway.conftest import Gateway, list_toy
from tests.gateway.test_bounds import serve


def words(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.fixture(scope="module")
def trained(gateway: Gateway) -> tuple[Consumer, int, list[int]]:
    """A completed MLP job over two providers' datasets, with a standardisation inside the model."""
    net = gateway.net
    first, _ = list_toy(net, 71, price=10**17)
    second, _ = list_toy(net, 72, price=2 * 10**17)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    spec = toy_spec(architecture="mlp", hidden_sizes=(8,), epochs=1, input_mean=(0.0, 0.5, 0.0, 1.0), input_scale=(1.0, 2.0, 1.0, 4.0))
    created = consumer.create_job([first.dataset_id, second.dataset_id], spec, epsilon=1.0, delta=1e-5, worker_fee=10**16)  # type: ignore[arg-type]
    net.worker.run_job(created.job_id)
    gateway.sync()
    return consumer, int(created.job_id), [int(first.dataset_id), int(second.dataset_id)]


def test_the_card_says_how_to_use_the_model_and_what_it_cost_in_privacy(gateway: Gateway, trained: tuple[Consumer, int, list[int]]) -> None:
    consumer, job_id, dataset_ids = trained
    net = gateway.net
    card = gateway.client.get(f"/api/jobs/{job_id}/card").json()
    assert card == build_card(net.market, net.blobs, job_id)  # the gateway serves the SDK's document
    assert card["format"] == CARD_FORMAT and card["model"]["architecture"] == {"name": "mlp", "activation": "relu", "hidden_sizes": [8]}
    assert [(c["name"], c["mean"], c["scale"]) for c in card["inputs"]["columns"]] == [
        (name, mean, scale) for name, mean, scale in zip(("x0", "x1", "x2", "x3"), (0.0, 0.5, 0.0, 1.0), (1.0, 2.0, 1.0, 4.0), strict=True)
    ]
    assert card["inputs"]["shape"] == ["rows", 4] and "pass raw values" in card["inputs"]["standardisation"]
    assert [c["index"] for c in card["outputs"]["classes"]] == [0, 1]
    assert [d["id"] for d in card["data"]["datasets"]] == dataset_ids
    assert [d["price"] for d in card["data"]["datasets"]] == [str(10**17), str(2 * 10**17)]
    assert [d["provider"] for d in card["data"]["datasets"]] == [net.market.dataset(d).provider for d in dataset_ids]
    metrics = consumer.fetch_metrics(job_id)
    privacy = card["privacy"]
    assert (privacy["epsilon"], privacy["delta"], privacy["accountant"], privacy["noise_multiplier"], privacy["steps"]) == (
        metrics["epsilon_spent"], metrics["delta"], "rdp", metrics["noise_multiplier"], metrics["steps"],
    )  # fmt: skip
    assert 0 < privacy["epsilon"] <= 1.0 and privacy["epsilon_on_chain"] == pytest.approx(privacy["epsilon"], abs=1e-6)
    result = net.market.result_submitted(job_id)
    assert card["receipt"]["model_hash"] == result.model_hash.hex() and card["receipt"]["transaction"] == result.tx_hash
    receipt = net.chain.w3.eth.get_transaction_receipt(result.tx_hash)
    assert receipt["blockNumber"] == card["receipt"]["block"]
    markdown = gateway.client.get(f"/api/jobs/{job_id}/card", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown")
    assert f"# Model of Sterling job {job_id}" in markdown.text and "| 1 | x1 | 0.5 | 2.0 |" in markdown.text
    assert result.tx_hash in markdown.text


def test_no_card_for_a_job_without_a_model(gateway: Gateway) -> None:
    net = gateway.net
    listed, _ = list_toy(net, 73)
    created = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs).create_job(
        [listed.dataset_id],
        toy_spec(),
        epsilon=1.0,
        delta=1e-5,
        worker_fee=10**16,  # type: ignore[arg-type]
    )
    gateway.sync()
    response = gateway.client.get(f"/api/jobs/{created.job_id}/card")
    assert response.status_code == 404 and "no model yet" in response.text
    assert gateway.client.get("/api/jobs/999999/card").status_code == 404


def test_the_cli_fetches_decrypts_and_exports_a_checked_model(
    gateway: Gateway, trained: tuple[Consumer, int, list[int]], tmp_path: Path
) -> None:
    import onnxruntime as ort
    import torch

    consumer, job_id, _ = trained
    key_file = tmp_path / f"sterling-job-{job_id}-key.json"  # as the web UI saves it
    key_file.write_text(json.dumps({
        "job_id": job_id, "public_key": consumer.public_key.hex(),
        "private_key": consumer._key.private_bytes_raw().hex(),  # noqa: SLF001 - the test plays the consumer's browser
    }))  # fmt: skip
    runner = CliRunner()
    with serve(gateway.app_with(port=free_port())) as (host, port):
        url = f"http://{host}:{port}"
        shown = runner.invoke(cli, ["model", "card", str(job_id), "--gateway", url, "--json"])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output) == gateway.client.get(f"/api/jobs/{job_id}/card").json()

        out, onnx_path = tmp_path / "model.safetensors", tmp_path / "model.onnx"
        args = ["model", "fetch", str(job_id), "--key-file", str(key_file), "--out", str(out), "--onnx", str(onnx_path), "--gateway", url]
        fetched = runner.invoke(cli, [*args, "--json"])
        assert fetched.exit_code == 0, fetched.output
        summary = json.loads(fetched.output)
        assert summary["onnx_check"]["rows"] == 1000 and summary["onnx_check"]["labels_equal"] == 1000
        assert summary["onnx_check"]["max_abs_diff"] < 1e-5
        assert out.read_bytes() == consumer.fetch_weights(job_id)
        card = json.loads((tmp_path / "model.card.json").read_text())
        assert card["receipt"]["model_hash"] == summary["model_hash"]
        assert "How to use it" in (tmp_path / "model.card.md").read_text()

        # The ONNX file answers as the consumer's own torch model does, on rows of the consumer's.
        model = consumer.fetch_model(job_id)
        rows = np.random.default_rng(9).normal(size=(1000, 4)).astype(np.float32)
        session = ort.InferenceSession(onnx_path.read_bytes(), providers=["CPUExecutionProvider"])
        logits = session.run(["logits"], {"features": rows})[0]
        with torch.no_grad():
            expected = model(torch.from_numpy(rows)).numpy()
        assert np.abs(logits - expected).max() < 1e-5

        # Refusals: nothing overwritten, nothing written, a sentence and a non-zero exit.
        before = out.read_bytes()
        again = runner.invoke(cli, args)
        assert again.exit_code == 2 and "exist" in words(again.output) and "--force" in words(again.output)
        assert out.read_bytes() == before
        stranger = tmp_path / "stranger.json"
        stranger.write_text(json.dumps({"job_id": job_id, "private_key": "11" * 32}))
        elsewhere = tmp_path / "elsewhere"
        wrong_key = runner.invoke(
            cli, ["model", "fetch", str(job_id), "--key-file", str(stranger), "--out", str(elsewhere / "m.safetensors"), "--gateway", url]
        )
        assert wrong_key.exit_code == 2 and "not the key" in words(wrong_key.output) and not elsewhere.exists()
        other_job = tmp_path / "other.json"
        other_job.write_text(json.dumps({"job_id": job_id + 1000, "private_key": "11" * 32}))
        mismatch = runner.invoke(cli, ["model", "fetch", str(job_id), "--key-file", str(other_job), "--gateway", url])
        assert mismatch.exit_code == 2 and f"not of job {job_id}" in words(mismatch.output)


def test_a_model_trained_on_declared_bounds_is_fetched_with_its_clipping_and_exported(gateway: Gateway, tmp_path: Path) -> None:
    """The clipping and scaling to the provider's declared bounds are part of the model: the card shows them,
    ``model fetch`` rebuilds the model with them, and the ONNX file clips as torch does."""
    import onnxruntime as ort
    import torch

    from enclave_worker.trusted.dataset import Schema

    net = gateway.net
    schema = Schema(
        task="classification", feature_names=("b_0", "b_1", "b_2", "b_3"), feature_shape=(4,), class_names=("neg", "pos"),
        feature_bounds=((-2, 2), (-3, 3), None, (0.5, 1.5)),
    )  # fmt: skip
    listed, _ = list_toy(net, 74, schema=schema)
    consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(epochs=1), epsilon=1.0, delta=1e-5, worker_fee=10**16)  # type: ignore[arg-type]
    net.worker.run_job(created.job_id)
    gateway.sync()
    job_id = int(created.job_id)
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps({
        "job_id": job_id, "public_key": consumer.public_key.hex(),
        "private_key": consumer._key.private_bytes_raw().hex(),  # noqa: SLF001 - the test plays the consumer's browser
    }))  # fmt: skip
    with serve(gateway.app_with(port=free_port())) as (host, port):
        out, onnx_path = tmp_path / "m.safetensors", tmp_path / "m.onnx"
        args = ["model", "fetch", str(job_id), "--key-file", str(key_file), "--out", str(out), "--onnx", str(onnx_path)]
        fetched = CliRunner().invoke(cli, [*args, "--json", "--gateway", f"http://{host}:{port}"])
    assert fetched.exit_code == 0, fetched.output
    assert json.loads(fetched.output)["onnx_check"]["labels_equal"] == 1000
    card = json.loads((tmp_path / "m.card.json").read_text())
    assert [c.get("bounds") for c in card["inputs"]["columns"]] == [[-2, 2], [-3, 3], None, [0.5, 1.5]]
    rows = np.array([[-50.0, 0.0, 1.0, 1.0], [50.0, 0.0, 1.0, 1.0], [2.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    logits = ort.InferenceSession(onnx_path.read_bytes(), providers=["CPUExecutionProvider"]).run(["logits"], {"features": rows})[0]
    with torch.no_grad():
        expected = consumer.fetch_model(job_id)(torch.from_numpy(rows)).numpy()
    assert np.abs(logits - expected).max() < 1e-5
    assert np.allclose(logits[1], logits[2], atol=1e-6)  # 50 is clipped to the declared 2
