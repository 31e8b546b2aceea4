"""``sterling account``: accounts kept in encrypted keystores, their balances, and withdrawals.

Keys live in a keystore folder (``--keystore-dir``, ``STERLING_KEYSTORE_DIR``, default
``~/.sterling/keystores``; the format geth, Foundry and MetaMask use, :mod:`marketplace.keystore`).
A key never appears on a command line, which every user of the machine can read: ``account
import`` reads it from a hidden prompt or a file, and passwords come from a hidden prompt, a file
(``--password-file``) or ``STERLING_PASSWORD``. Every command that signs takes ``--account NAME``
(or ``--keystore FILE``), as Foundry's ``cast`` does.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sterling.cli_common import (
    DEFAULT_GATEWAY,
    FROM_OPTIONS,
    GatewayOption,
    JsonOption,
    KeystoreDirOption,
    PasswordFileOption,
    Signer,
    connect,
    keystores,
    read_password,
    signing,
)

account_app = typer.Typer(help="Accounts in encrypted keystores: create, import, list, balances, withdrawals.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _say_entry(entry: Any, json_out: bool, verb: str) -> None:
    if json_out:
        console.print_json(json.dumps({"name": entry.name, "address": entry.address, "path": str(entry.path)}))
    else:
        console.print(f"{verb} account [bold]{entry.name}[/bold]: {entry.address} (keystore {entry.path})")


@account_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="the account's name in the keystore folder")],
    keystore_dir: KeystoreDirOption = None,
    password_file: PasswordFileOption = None,
    light_kdf: Annotated[
        bool, typer.Option("--light-kdf", help="scrypt N = 2^12 instead of 2^18, as geth's --lightkdf (development only)")
    ] = False,
    json_out: JsonOption = False,
) -> None:
    """Create an account with a fresh random key, encrypted in a keystore; prints its address (never the key)."""
    from marketplace.keystore import KeystoreError

    store = keystores(keystore_dir)
    try:
        store.path(name)
        password = read_password(password_file, what=f"a password for account {name}", confirm=True)
        entry = store.create(name, password, light=light_kdf)
    except KeystoreError as e:
        raise typer.BadParameter(str(e)) from e
    _say_entry(entry, json_out, "created")


@account_app.command("import")
def import_(
    name: Annotated[str, typer.Argument(help="the account's name in the keystore folder")],
    keystore_file: Annotated[
        Path | None, typer.Option("--keystore-file", help="a keystore written by geth, Foundry or MetaMask (kept as it is)")
    ] = None,
    private_key_file: Annotated[
        Path | None, typer.Option("--private-key-file", help="a file holding the hex private key (encrypted into a new keystore)")
    ] = None,
    keystore_dir: KeystoreDirOption = None,
    password_file: PasswordFileOption = None,
    light_kdf: Annotated[bool, typer.Option("--light-kdf", help="with a private key: scrypt N = 2^12 (development only)")] = False,
    json_out: JsonOption = False,
) -> None:
    """Import an account: another tool's keystore file (its password is checked now), or a private
    key from a file or a hidden prompt (never from the command line), encrypted with a new password."""
    from eth_account import Account

    from marketplace.keystore import KeystoreError

    if keystore_file is not None and private_key_file is not None:
        raise typer.BadParameter("give --keystore-file or --private-key-file, not both")
    store = keystores(keystore_dir)
    try:
        store.path(name)
        if keystore_file is not None:
            entry = store.add_file(name, keystore_file, read_password(password_file, what=f"the password of {keystore_file}"))
        else:
            if private_key_file is not None:
                try:
                    secret = private_key_file.read_text(encoding="utf-8").strip()
                except OSError as e:
                    raise typer.BadParameter(f"cannot read {private_key_file}: {e.strerror}", param_hint="--private-key-file") from e
            elif sys.stdin.isatty():
                secret = str(typer.prompt("Private key (hex)", hide_input=True)).strip()
            else:
                raise typer.BadParameter("no terminal to ask for the private key: give --private-key-file or --keystore-file")
            try:
                key = Account.from_key(secret).key
            except (ValueError, TypeError) as e:  # the message would quote the secret
                raise typer.BadParameter("that is not a private key in hex (32 bytes)") from e
            entry = store.add_key(
                name, key, read_password(password_file, what=f"a password for account {name}", confirm=True), light=light_kdf
            )
    except KeystoreError as e:
        raise typer.BadParameter(str(e)) from e
    _say_entry(entry, json_out, "imported")


@account_app.command("ls")
def ls(keystore_dir: KeystoreDirOption = None, json_out: JsonOption = False) -> None:
    """List the accounts in the keystore folder (no password needed: addresses are stored in clear)."""
    store = keystores(keystore_dir)
    entries = store.entries()
    if json_out:
        console.print_json(json.dumps([{"name": e.name, "address": e.address, "path": str(e.path)} for e in entries]))
        return
    if not entries:
        console.print(f"no accounts in {store.folder}: create one with `sterling account new NAME`")
        return
    table = Table("name", "address", title=str(store.folder))
    for e in entries:
        table.add_row(e.name, e.address or "(not recorded)")
    console.print(table)


@dataclass(frozen=True)
class _Markets:
    """The markets a gateway names, as clients of the chain behind its relay."""

    payable: list[tuple[str, Any]]
    """(label, client) of every contract that holds payments for withdrawal."""
    currency: Any
    symbol: str
    decimals: int


def _markets(chain: Any, config: dict[str, Any]) -> _Markets:
    from marketplace.competitions import CompetitionMarketClient
    from marketplace.contracts import MarketClient
    from marketplace.model_market import ModelMarketClient

    contracts = config.get("contracts") or {}
    market = MarketClient(chain, contracts["job_market"])
    payable: list[tuple[str, Any]] = [("job market", market)]
    if contracts.get("model_market"):
        payable.append(("model market", ModelMarketClient(chain, contracts["model_market"])))
    if contracts.get("competitions"):
        payable.append(("competition market", CompetitionMarketClient(chain, contracts["competitions"])))
    token = config.get("payment_token")
    symbol, decimals = (str(token["symbol"]), int(token["decimals"])) if token else ("ETH", 18)
    return _Markets(payable=payable, currency=market, symbol=symbol, decimals=decimals)


def _pending(label: str, client: Any, address: str) -> int:
    return int(client.pending_withdrawal(address) if label == "job market" else client.credits(address))


def _amount(value: int, decimals: int, symbol: str) -> str:
    return f"{value / 10**decimals:,.6f} {symbol}"


def _address_of(who: str, keystore_dir: Path | None) -> str:
    from eth_utils import is_address, to_checksum_address

    from marketplace.keystore import KeystoreError

    if is_address(who):
        return str(to_checksum_address(who))
    try:
        entry = keystores(keystore_dir).entry(who)
    except KeystoreError as e:
        raise typer.BadParameter(f"{who!r} is neither an address nor an account: {e}") from e
    if entry.address is None:
        raise typer.BadParameter(f"the keystore of {who!r} does not record its address: unlock it with a command that signs")
    return entry.address


@account_app.command("balance")
def balance(
    who: Annotated[str, typer.Argument(help="an account's name or an address")],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    keystore_dir: KeystoreDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show what an address holds: the chain's currency, the market's payment token if it has one,
    and what each market holds for it to withdraw."""

    address = _address_of(who, keystore_dir)
    http, config, chain = connect(gateway, timeout=60)
    try:
        markets = _markets(chain, config)
        native = int(chain.balance(address))
        token = int(markets.currency.payment_balance(address)) if config.get("payment_token") else None
        pending = {label: _pending(label, client, address) for label, client in markets.payable}
    finally:
        http.close()
    if json_out:
        console.print_json(
            json.dumps(
                {
                    "address": address,
                    "native_wei": str(native),
                    "token_units": None if token is None else str(token),
                    "token_symbol": markets.symbol if token is not None else None,
                    "withdrawable": {label: str(v) for label, v in pending.items()},
                }
            )
        )
        return
    table = Table("", "amount", title=address)
    table.add_row("ETH (gas)", _amount(native, 18, "ETH"))
    if token is not None:
        table.add_row(f"{markets.symbol} (payments)", _amount(token, markets.decimals, markets.symbol))
    for label, value in pending.items():
        table.add_row(f"withdrawable from the {label}", _amount(value, markets.decimals, markets.symbol))
    console.print(table)


@account_app.command("withdraw")
@signing
def withdraw(
    gateway: GatewayOption = DEFAULT_GATEWAY,
    who: Signer = FROM_OPTIONS,
    keystore_dir: KeystoreDirOption = None,
    json_out: JsonOption = False,
) -> None:
    """Withdraw everything the markets hold for the account (one transaction per market that holds something)."""
    from marketplace.errors import SterlingError

    http, config, chain = connect(gateway, timeout=120)
    done: list[dict[str, Any]] = []
    try:
        signer = dataclasses.replace(who, keystore_dir=keystore_dir).unlock(http)
        markets = _markets(chain, config)
        for label, client in markets.payable:
            if _pending(label, client, signer.address) == 0:
                continue
            try:
                amount, tx = client.withdraw(signer)
            except SterlingError as e:
                err.print(f"[red]withdrawing from the {label} failed[/red]: {e}")
                raise typer.Exit(1) from e
            done.append({"market": label, "amount": str(int(amount)), "transaction": tx.tx_hash})
    finally:
        http.close()
    if json_out:
        console.print_json(json.dumps({"address": signer.address, "withdrawn": done}))
    elif not done:
        console.print(f"nothing to withdraw for {signer.address}")
    else:
        for d in done:
            console.print(
                f"withdrew {_amount(int(d['amount']), markets.decimals, markets.symbol)} from the {d['market']} (tx {d['transaction']})"
            )
