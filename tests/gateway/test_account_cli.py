"""``sterling account``: keystores at the command line, balances and withdrawals through a gateway over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from typer.testing import CliRunner

from marketplace.chain import free_port
from marketplace.consumer import Consumer
from sterling.cli import app as cli
from tests.conftest import toy_spec
from tests.gateway.conftest import Gateway, list_toy
from tests.gateway.test_bounds import serve

FOUNDRY = Path(__file__).parents[1] / "fixtures" / "keystores" / "foundry-ec554aeafe75601aaab43bd4621a22284db566c2.json"
FOUNDRY_ADDRESS = "0xeC554aeAFE75601AaAb43Bd4621A22284dB566C2"  # what `cast wallet address` prints for it


def words(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("s3cret pass\n")  # a trailing newline is not part of the password, as in Foundry
    return path


def test_accounts_are_created_imported_and_listed_without_a_key_on_any_command_line(tmp_path: Path, password_file: Path) -> None:
    runner, folder = CliRunner(), tmp_path / "keystores"
    env = {"STERLING_KEYSTORE_DIR": str(folder)}
    created = runner.invoke(cli, ["account", "new", "alice", "--password-file", str(password_file), "--light-kdf", "--json"], env=env)
    assert created.exit_code == 0, created.output
    alice = json.loads(created.output)
    assert alice["name"] == "alice" and alice["address"].startswith("0x") and "private" not in created.output.lower()

    foundry_password = tmp_path / "password-ec554"
    foundry_password.write_text("keystorepassword")
    imported = runner.invoke(
        cli, ["account", "import", "cast", "--keystore-file", str(FOUNDRY), "--password-file", str(foundry_password), "--json"], env=env
    )
    assert imported.exit_code == 0, imported.output
    assert json.loads(imported.output)["address"] == FOUNDRY_ADDRESS

    key_file = tmp_path / "key"
    key_file.write_text("0x" + "42" * 32 + "\n")
    from_key = runner.invoke(
        cli,
        ["account", "import", "bob", "--private-key-file", str(key_file), "--password-file", str(password_file), "--light-kdf"],
        env=env,
    )
    assert from_key.exit_code == 0, from_key.output
    listed = runner.invoke(cli, ["account", "ls", "--json"], env=env)
    assert listed.exit_code == 0
    assert [(a["name"], a["address"]) for a in json.loads(listed.output)] == [
        ("alice", alice["address"]), ("bob", Account.from_key(b"\x42" * 32).address), ("cast", FOUNDRY_ADDRESS),
    ]  # fmt: skip

    # Refusals: a clear sentence, a non-zero exit, nothing changed.
    before = sorted(p.name for p in folder.iterdir())
    taken = runner.invoke(cli, ["account", "new", "alice", "--password-file", str(password_file), "--light-kdf"], env=env)
    assert taken.exit_code == 2 and "already exists" in words(taken.output)
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    refused = runner.invoke(cli, ["account", "import", "cast2", "--keystore-file", str(FOUNDRY), "--password-file", str(wrong)], env=env)
    assert refused.exit_code == 2 and "wrong password" in words(refused.output)
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello")
    bad_key = runner.invoke(
        cli, ["account", "import", "carol", "--private-key-file", str(not_a_key), "--password-file", str(password_file)], env=env
    )
    assert bad_key.exit_code == 2 and "not a private key" in words(bad_key.output) and "hello" not in bad_key.output
    no_terminal = runner.invoke(cli, ["account", "new", "dave"], env=env)  # CliRunner's stdin is no terminal
    assert no_terminal.exit_code == 2 and "--password-file" in words(no_terminal.output)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_balance_and_withdraw_through_a_gateway_with_a_keystore_account(gateway: Gateway, tmp_path: Path, password_file: Path) -> None:
    net = gateway.net
    runner, env = CliRunner(), {"STERLING_KEYSTORE_DIR": str(tmp_path / "keystores")}
    consumer_account = net.chain.new_account()
    key_file = tmp_path / "key"
    key_file.write_text(consumer_account.key.hex())
    imported = runner.invoke(
        cli, ["account", "import", "consumer", "--private-key-file", str(key_file), "--password-file", str(password_file), "--light-kdf"],
        env=env,
    )  # fmt: skip
    assert imported.exit_code == 0, imported.output
    listed, _ = list_toy(net, 61, price=10**17)
    consumer = Consumer(consumer_account, market=net.market, blobs=net.blobs)
    created = consumer.create_job([listed.dataset_id], toy_spec(), epsilon=1.0, delta=1e-5, worker_fee=10**16)  # type: ignore[arg-type]
    consumer.cancel_job(created.job_id)
    refund = int(net.market.pending_withdrawal(consumer_account.address))
    assert refund == created.escrow > 0

    app = gateway.app_with(port=free_port())
    with serve(app) as (host, port):
        url = f"http://{host}:{port}"
        shown = runner.invoke(cli, ["account", "balance", "consumer", "--gateway", url, "--json"], env=env)
        assert shown.exit_code == 0, shown.output
        balance = json.loads(shown.output)
        assert balance["address"] == consumer_account.address and balance["withdrawable"]["job market"] == str(refund)
        assert int(balance["native_wei"]) == net.chain.balance(consumer_account.address)

        no_signer = runner.invoke(cli, ["account", "withdraw", "--gateway", url], env=env)
        assert no_signer.exit_code == 2 and "--account NAME" in words(no_signer.output)
        wrong = tmp_path / "wrong"
        wrong.write_text("nope")
        refused = runner.invoke(
            cli, ["account", "withdraw", "--account", "consumer", "--password-file", str(wrong), "--gateway", url], env=env
        )
        assert refused.exit_code == 2 and "wrong password" in words(refused.output)
        assert net.market.pending_withdrawal(consumer_account.address) == refund

        before = net.chain.balance(consumer_account.address)
        withdrawn = runner.invoke(
            cli,
            ["account", "withdraw", "--account", "consumer", "--password-file", str(password_file), "--gateway", url, "--json"],
            env=env,
        )
        assert withdrawn.exit_code == 0, withdrawn.output
        (paid,) = json.loads(withdrawn.output)["withdrawn"]
        assert paid["market"] == "job market" and int(paid["amount"]) == refund
        assert net.market.pending_withdrawal(consumer_account.address) == 0
        assert refund - 10**15 < net.chain.balance(consumer_account.address) - before <= refund  # less the gas
        again = runner.invoke(
            cli, ["account", "withdraw", "--account", "consumer", "--password-file", str(password_file), "--gateway", url], env=env
        )
        assert again.exit_code == 0 and "nothing to withdraw" in words(again.output)
        unknown = runner.invoke(cli, ["account", "balance", "nobody", "--gateway", url], env=env)
        assert unknown.exit_code == 2 and "neither an address nor an account" in words(unknown.output)
