"""The SDK works installed: ``pip install .`` into a fresh venv, then a script outside the checkout.

The fresh virtual environment gets the project from ``python -m pip install --no-deps .`` (a real
wheel build: package data must be declared to arrive) and borrows the third-party dependencies
from the project's venv through a ``.pth`` line, so the test needs no download of torch and
friends. The script runs from a temporary folder with no ``PYTHONPATH``, checks that every
Sterling package comes from the new venv's site-packages, then lists a dataset and runs a job on
the embedded chain: contract artifacts, the enclave's trusted code and the UI's files are all read
from the installed packages. The wheel is built from a copy of the checkout's files (tracked and
not ignored), so the build leaves nothing behind in the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import tempfile
    from importlib import resources
    from pathlib import Path

    import numpy as np

    import enclave_worker, marketplace, oracle, sterling
    from enclave_worker.trusted.dataset import DatasetPackage, Schema
    from enclave_worker.trusted.models import ModelSpec
    from marketplace import Consumer, JobStatus, Terms, delta_units, epsilon_units, list_dataset
    from marketplace import chain as chain_mod
    from marketplace.local_training import predict
    from sterling.localnet import bring_up

    site = Path(sys.argv[1]).resolve()
    for package in (enclave_worker, marketplace, oracle, sterling):
        assert Path(package.__file__).resolve().is_relative_to(site), (package.__name__, package.__file__)
    web = resources.files("sterling").joinpath("web", "index.html")
    assert web.is_file(), "the web UI is not shipped"

    rng = np.random.default_rng(7)
    schema = Schema(task="classification", feature_names=("a", "b", "c"), feature_shape=(3,), class_names=("no", "yes"))

    def package(rows: int) -> DatasetPackage:
        x = rng.normal(size=(rows, 3)).astype(np.float32)
        return DatasetPackage(features=x, labels=(x @ np.array([2.0, -1.0, 0.5], dtype=np.float32) > 0).astype(np.int64), schema=schema)

    with tempfile.TemporaryDirectory() as state:
        net = bring_up(chain_mod.embedded(), Path(state))
        try:
            provider = net.chain.new_account()
            terms = Terms(price_per_job=10**16, max_epsilon_per_job=epsilon_units(2.0),
                          total_epsilon_budget=epsilon_units(10.0), max_delta=delta_units(1e-4))
            listed = list_dataset(package(300), provider, terms=terms, market=net.market,
                                  registry=net.registry, key_manager=net.key_manager, blobs=net.blobs)
            consumer = Consumer(net.chain.new_account(), market=net.market, blobs=net.blobs)
            spec = ModelSpec(architecture="logistic_regression", epochs=3, batch_size=32,
                             learning_rate=0.1, max_grad_norm=1.0, seed=0)
            created = consumer.create_job([listed.dataset_id], spec, epsilon=1.0, delta=1e-5, worker_fee=10**15)
            net.worker.run_job(created.job_id)
            job = net.market.job(created.job_id)
            test = package(400)
            accuracy = float((predict(consumer.fetch_model(created.job_id), test.features) == test.labels).mean())
        finally:
            net.close()
    print(json.dumps({"dataset": int(listed.dataset_id), "job": int(created.job_id), "status": job.status.name,
                      "epsilon_spent": job.epsilon_spent, "accuracy": accuracy}))
    """
)


@pytest.mark.slow
def test_pip_install_then_list_and_train_outside_the_checkout(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip())
    # Third-party dependencies come from the project's venv; Sterling itself must come from the wheel.
    (site / "zz_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    source = tmp_path / "source"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, timeout=60,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        origin, copy = REPO / name, source / name
        if origin.is_symlink() or origin.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copy, follow_symlinks=False)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(source)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    for package in ("marketplace", "enclave_worker", "oracle", "sterling"):
        assert (site / package).is_dir() and not (site / package).is_symlink(), package
    assert (site / "marketplace" / "artifacts" / "JobMarket.json").is_file()

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    script = workdir / "list_and_train.py"
    script.write_text(SCRIPT)
    run = subprocess.run(
        [str(python), str(script), str(site)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-6000:])
    import json

    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["status"] == "COMPLETED", report
    assert 0 < report["epsilon_spent"] <= 10**6
    assert report["accuracy"] > 0.7, report
