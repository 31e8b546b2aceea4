"""``sterling up --payment-token``: a market paid in an ERC-20, from the terminal to a trained model and a withdrawal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from marketplace import chain as chain_mod
from marketplace.errors import ConfigError
from sterling.cli import app as cli
from sterling.up import TEST_TOKEN_RECORD, ensure_deployment, ensure_payment_token, spawned
from tests.conftest import toy_spec

USD = 10**6


def words(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_the_test_token_is_deployed_once_and_a_deployment_follows_the_currency_asked(tmp_path: Path) -> None:
    chain = chain_mod.embedded()
    deployer = chain.new_account()
    token = ensure_payment_token(chain, "test", tmp_path, deployer)
    assert token is not None and ensure_payment_token(chain, "test", tmp_path, deployer) == token  # recorded, reused
    assert json.loads((tmp_path / TEST_TOKEN_RECORD).read_text())["address"] == token
    assert ensure_payment_token(chain, None, tmp_path, deployer) is None
    assert ensure_payment_token(chain, token, tmp_path, deployer) == token
    with pytest.raises(ConfigError, match="no contract at"):
        ensure_payment_token(chain, "0x" + "11" * 20, tmp_path, deployer)
    record = tmp_path / "deployment.json"
    paid, fresh = ensure_deployment(chain, deployer, record, payment_token=token)
    with pytest.raises(ConfigError, match="does not answer ERC-20"):
        ensure_payment_token(chain, paid.registry, tmp_path, deployer)  # a contract, not a token
    assert fresh and paid.payment_token is not None and paid.payment_token.lower() == token.lower()
    again, fresh_again = ensure_deployment(chain, deployer, record, payment_token=token)
    assert not fresh_again and again.market == paid.market
    native, fresh_native = ensure_deployment(chain, deployer, record, payment_token=None)
    assert fresh_native and native.payment_token is None and native.market != paid.market


@pytest.mark.slow
def test_sterling_up_with_a_test_token_lists_trains_and_pays_in_it(tmp_path: Path) -> None:
    runner = CliRunner()
    table = tmp_path / "table.csv"
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 4))
    table.write_text("a,b,c,d,y\n" + "".join(f"{r[0]:.4f},{r[1]:.4f},{r[2]:.4f},{r[3]:.4f},{int(r @ [1.5, -1, 0.5, 0] > 0)}\n" for r in x))
    spec = tmp_path / "spec.json"
    spec.write_bytes(toy_spec(epochs=1).to_bytes())
    with spawned(tmp_path / "state", log=tmp_path / "up.log", options=("--payment-token", "test")) as (url, _):
        config = httpx.get(f"{url}/api/config").json()
        assert config["payment_token"]["decimals"] == 6 and config["payment_token"]["address"]
        provider, consumer = config["dev_accounts"][0]["address"], config["dev_accounts"][1]["address"]
        shown = runner.invoke(cli, ["account", "balance", provider, "--gateway", url, "--json"])
        assert shown.exit_code == 0, shown.output
        assert int(json.loads(shown.output)["token_units"]) >= 1_000 * USD  # minted at start

        published = runner.invoke(
            cli, ["dataset", "publish", str(table), "--price", str(5 * USD), "--epsilon-per-job", "2", "--total-epsilon", "6", "--yes",
                  "--json", "--dev-account", "0", "--gateway", url],
        )  # fmt: skip
        assert published.exit_code == 0, published.output
        dataset_id = json.loads(published.output[published.output.index("{") :])["dataset_id"]
        for _ in range(200):  # the indexer (a child process) follows the listing
            if httpx.get(f"{url}/api/datasets/{dataset_id}").status_code == 200:
                break
            time.sleep(0.1)
        created = runner.invoke(
            cli, ["job", "create", "--datasets", str(dataset_id), "--spec", str(spec), "--epsilon", "1", "--worker-fee", str(USD),
                  "--key-dir", str(tmp_path / "keys"), "--yes", "--json", "--dev-account", "1", "--gateway", url],
        )  # fmt: skip
        assert created.exit_code == 0, created.output
        assert f"{6 * USD:,} {config['payment_token']['symbol']}" in created.output  # the total, in the token's units
        job_id = json.loads(created.output[created.output.index("{") :])["job_id"]
        watched = runner.invoke(cli, ["job", "watch", str(job_id), "--timeout", "240", "--json", "--gateway", url])
        assert watched.exit_code == 0, watched.output
        assert json.loads(watched.output[watched.output.index("{") :])["status"] == "completed"

        before = json.loads(runner.invoke(cli, ["account", "balance", provider, "--gateway", url, "--json"]).output)
        assert int(before["withdrawable"]["job market"]) == 5 * USD
        withdrawn = runner.invoke(cli, ["account", "withdraw", "--dev-account", "0", "--gateway", url, "--json"])
        assert withdrawn.exit_code == 0, withdrawn.output
        after = json.loads(runner.invoke(cli, ["account", "balance", provider, "--gateway", url, "--json"]).output)
        assert int(after["token_units"]) - int(before["token_units"]) == 5 * USD and after["withdrawable"]["job market"] == "0"
        assert consumer != provider
