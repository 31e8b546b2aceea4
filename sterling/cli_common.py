"""What the ``sterling`` commands that talk to a gateway share: its options, the connection, and
who signs (a keystore account, a local chain's development account, or ``STERLING_PRIVATE_KEY``).

Keys live in a keystore folder (``--keystore-dir``, ``STERLING_KEYSTORE_DIR``, default
``~/.sterling/keystores``: :mod:`marketplace.keystore`). A key never appears on a command line,
which every user of the machine can read, and passwords come from a hidden prompt, a file
(``--password-file``) or ``STERLING_PASSWORD``.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from marketplace.chain import Chain
    from marketplace.keystore import Keystores

GatewayOption = Annotated[str, typer.Option("--gateway", help="the gateway's base URL")]
DEFAULT_GATEWAY = "http://127.0.0.1:8000"
DevAccountOption = Annotated[
    int | None, typer.Option("--dev-account", help="sign with the gateway's N-th development account (local chains only)")
]
KeystoreDirOption = Annotated[
    Path | None,
    typer.Option("--keystore-dir", envvar="STERLING_KEYSTORE_DIR", help="the keystore folder (default ~/.sterling/keystores)"),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option("--password-file", help="read the keystore's password from this file (else STERLING_PASSWORD, else a prompt)"),
]
AccountOption = Annotated[
    str | None, typer.Option("--account", envvar="STERLING_ACCOUNT", help="sign with this account of the keystore folder")
]
KeystoreOption = Annotated[Path | None, typer.Option("--keystore", help="sign with the account in this keystore file")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def keystores(folder: Path | None) -> Keystores:
    from marketplace.keystore import Keystores

    return Keystores(folder)


def read_password(password_file: Path | None, *, what: str, confirm: bool = False) -> str:
    """A password from ``password_file`` (one trailing newline dropped, as Foundry does), else
    ``STERLING_PASSWORD``, else a hidden prompt on a terminal.

    Raises:
        typer.BadParameter: the file cannot be read, or there is no terminal to ask on.
    """
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except OSError as e:
            raise typer.BadParameter(f"cannot read {password_file}: {e.strerror}", param_hint="--password-file") from e
        return text[:-1] if text.endswith("\n") else text
    if os.environ.get("STERLING_PASSWORD"):
        return os.environ["STERLING_PASSWORD"]
    if not sys.stdin.isatty():
        raise typer.BadParameter(f"no terminal to ask for {what}: give --password-file or set STERLING_PASSWORD")
    return str(typer.prompt(what.capitalize(), hide_input=True, confirmation_prompt=confirm))


def unlock_signer(*, account: str | None, keystore: Path | None, keystore_dir: Path | None, password_file: Path | None) -> LocalAccount:
    """The account to sign with, from ``--account`` (a name in the keystore folder) or ``--keystore`` (a file).

    Raises:
        typer.BadParameter: neither or both are given, or the keystore cannot be unlocked (wrong password, say).
    """
    from marketplace.keystore import KeystoreError, unlock

    if (account is None) == (keystore is None):
        raise typer.BadParameter("give one account to sign with: --account NAME (see `sterling account ls`) or --keystore FILE")
    try:
        if keystore is not None:
            return unlock(keystore, read_password(password_file, what=f"the password of {keystore}"))
        store = keystores(keystore_dir)
        store.entry(str(account))  # says which accounts there are before asking for a password
        return store.unlock(str(account), read_password(password_file, what=f"the password of account {account}"))
    except KeystoreError as e:
        raise typer.BadParameter(str(e), param_hint="--account / --keystore") from e


@dataclass(frozen=True)
class Signer:
    """Who signs a command's transactions, from its options: a keystore account (``--account`` /
    ``--keystore``), else one of a local gateway's development accounts (``--dev-account``), else
    the hex key in ``STERLING_PRIVATE_KEY`` (for scripts; never a key on the command line)."""

    dev_account: int | None = None
    account: str | None = None
    keystore: Path | None = None
    password_file: Path | None = None
    keystore_dir: Path | None = None

    def unlock(self, http: Any) -> LocalAccount:
        """The account (``http``: the gateway's client, asked for development accounts).

        Raises:
            typer.BadParameter: nothing says who signs, or the choice cannot be unlocked.
        """
        from eth_account import Account

        if self.account is not None or self.keystore is not None:
            return unlock_signer(
                account=self.account, keystore=self.keystore, keystore_dir=self.keystore_dir, password_file=self.password_file
            )
        if self.dev_account is not None:
            accounts = http.get("/api/config").json().get("dev_accounts") or []
            if not 0 <= self.dev_account < len(accounts):
                raise typer.BadParameter(f"the gateway offers {len(accounts)} development accounts", param_hint="--dev-account")
            dev: LocalAccount = Account.from_key(accounts[self.dev_account]["private_key"])
            return dev
        key = os.environ.get("STERLING_PRIVATE_KEY")
        if not key:
            raise typer.BadParameter(
                "say who signs: --account NAME (see `sterling account ls`), --keystore FILE, "
                "--dev-account N on a local chain, or STERLING_PRIVATE_KEY"
            )
        try:
            from_env: LocalAccount = Account.from_key(key)
        except (ValueError, TypeError) as e:
            raise typer.BadParameter("STERLING_PRIVATE_KEY is not a private key") from e
        return from_env


def connect(gateway: str, *, timeout: float) -> tuple[Any, dict[str, Any], Chain]:
    """An HTTP client of ``gateway``, its ``/api/config`` and the chain behind its JSON-RPC relay.

    Raises:
        typer.BadParameter: no Sterling gateway answers there.
    """
    import httpx

    from marketplace.chain import connect_gateway
    from marketplace.errors import ChainUnavailable

    http = httpx.Client(base_url=gateway, timeout=timeout)
    try:
        config = http.get("/api/config").json()
        chain = connect_gateway(gateway)
    except (httpx.HTTPError, ValueError, ChainUnavailable) as e:
        http.close()
        raise typer.BadParameter(f"no Sterling gateway at {gateway}: {e}", param_hint="--gateway") from e
    return http, config, chain


def refused(e: Exception) -> typer.Exit:
    """Say why the chain or the gateway refused (a contract's custom error in words) on standard
    error, and give the exit (code 1) to raise."""
    from rich.console import Console

    from marketplace.errors import ContractReverted
    from marketplace.refusals import explain

    Console(stderr=True).print(f"[red]refused:[/red] {explain(e) if isinstance(e, ContractReverted) else e}")
    return typer.Exit(1)


def get_json(http: Any, path: str, **params: Any) -> Any:
    """``GET path`` of the gateway (parameters that are ``None`` left out), its JSON.

    Raises:
        typer.Exit: code 1 after saying the gateway's reason, when it has no such thing (404) or refuses the query (422).
    """
    from rich.console import Console

    response = http.get(path, params={k: v for k, v in params.items() if v is not None})
    if response.status_code in (404, 422):
        is_json = response.headers.get("content-type", "").startswith("application/json")
        detail = response.json().get("detail") if is_json else None
        Console(stderr=True).print(f"[red]{detail or response.text or 'not found'}[/red]")
        raise typer.Exit(1)
    response.raise_for_status()
    return response.json()


SIGNER_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("dev_account", DevAccountOption),
    ("account", AccountOption),
    ("keystore", KeystoreOption),
    ("password_file", PasswordFileOption),
)
"""The options every command that signs takes, in the order ``--help`` lists them."""


FROM_OPTIONS = Signer()
"""The default of a command's :class:`Signer` parameter; :func:`signing` fills it from the options."""


def signing(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give ``command``, which has one parameter of type :class:`Signer`, the options that say who
    signs (``--dev-account``, ``--account``, ``--keystore``, ``--password-file``), declared once here."""
    signature = inspect.signature(command, eval_str=True)
    (name,) = [p.name for p in signature.parameters.values() if p.annotation is Signer]
    kept = [p for p in signature.parameters.values() if p.name != name]
    added = [inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind) for option, kind in SIGNER_OPTIONS]

    @functools.wraps(command)
    def with_signer(*args: Any, **kwargs: Any) -> Any:
        kwargs[name] = Signer(*(kwargs.pop(option, None) for option, _ in SIGNER_OPTIONS))
        return command(*args, **kwargs)

    parameters = [*kept, *added]
    with_signer.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_signer.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
    return with_signer
