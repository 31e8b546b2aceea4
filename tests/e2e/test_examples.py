"""docs/examples/consumer.ipynb runs as written: its code cells, in order, against a gateway over
HTTP whose trainer follows the chain, with only its parameters cell replaced (as papermill does)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from marketplace.chain import free_port
from marketplace.keystore import Keystores
from marketplace.provider import list_dataset
from oracle.dispatcher import Dispatcher
from sterling.demo import hospital_shards
from sterling.localnet import LocalNet
from tests.conftest import toy_terms
from tests.gateway.conftest import make_gateway
from tests.gateway.test_bounds import serve

NOTEBOOK = Path(__file__).parents[2] / "docs" / "examples" / "consumer.ipynb"


def cells(path: Path) -> list[dict[str, Any]]:
    notebook = json.loads(path.read_text())
    assert notebook["nbformat"] == 4
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


@pytest.mark.slow
def test_the_consumer_notebook_runs_end_to_end(fresh_localnet: LocalNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = fresh_localnet
    shards, _, _ = hospital_shards(seed=7)
    for shard in shards:  # three hospitals list their part of the training data
        list_dataset(
            shard, net.chain.new_account(), terms=toy_terms(price=10**17, max_epsilon=2.0, total=10.0), market=net.market,
            registry=net.registry, key_manager=net.key_manager, blobs=net.blobs,
        )  # fmt: skip
    consumer = net.chain.new_account()
    monkeypatch.setenv("STERLING_KEYSTORE_DIR", str(tmp_path / "keystores"))
    Keystores().add_key("lab", consumer.key, "lab's password", light=True)
    password_file = tmp_path / "password"
    password_file.write_text("lab's password\n")
    monkeypatch.chdir(tmp_path)  # the notebook saves the job's key file in its working folder

    gateway = make_gateway(net, tmp_path / "gateway")
    stop = threading.Event()
    dispatcher = Dispatcher(net.market, [net.worker], from_block=net.deployment.block)
    threads = [
        threading.Thread(target=gateway.indexer.run, args=(stop,), kwargs={"interval": 0.2}, daemon=True),
        threading.Thread(target=dispatcher.run, args=(stop,), kwargs={"interval": 0.2}, daemon=True),
    ]
    for t in threads:
        t.start()
    code = cells(NOTEBOOK)
    assert "parameters" in code[0]["metadata"].get("tags", []), "the first code cell holds the parameters"
    namespace: dict[str, Any] = {}
    try:
        with serve(gateway.app_with(port=free_port())) as (host, port):
            exec(f"GATEWAY = 'http://{host}:{port}'\nACCOUNT = 'lab'\nPASSWORD_FILE = {str(password_file)!r}\nEPSILON = 1.0", namespace)  # noqa: S102
            for number, cell in enumerate(code[1:], start=2):
                try:
                    exec(compile("".join(cell["source"]), f"{NOTEBOOK.name}[cell {number}]", "exec"), namespace)  # noqa: S102
                except Exception as e:  # say which cell failed
                    raise AssertionError(f"cell {number} of {NOTEBOOK.name} failed: {type(e).__name__}: {e}") from e
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        gateway.index.close()
    assert len(namespace["chosen"]) == 3
    assert namespace["done"]["status"] == "completed" and 0 < namespace["done"]["epsilon_spent"] <= 1.0
    assert namespace["card"]["privacy"]["accountant"] == "rdp" and namespace["card"]["data"]["rows"] == sum(s.rows for s in shards)
    assert (tmp_path / f"sterling-job-{namespace['job'].id}-key.json").exists()
    assert namespace["accuracy"] > 0.8, namespace["accuracy"]  # on the consumer's own 114 rows, at ε ≤ 1
