"""``sterling competition``: create a competition, submit a sealed model, read the leaderboard,
close it, buy a model (docs/competitions.md).

Every command talks to a gateway (``--gateway``, default the local ``sterling up``) and to the chain
through its JSON-RPC relay; transactions are signed here, by a keystore account (``--account NAME``
or ``--keystore FILE``: ``sterling account``), one of a local chain's development accounts
(``--dev-account N``), or the hex key in ``STERLING_PRIVATE_KEY``. Test sets and models are encrypted here, to the key
manager's key from the registry on-chain, never to a key the gateway names.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sterling.cli_common import (
    DEFAULT_GATEWAY,
    FROM_OPTIONS,
    GatewayOption,
    JsonOption,
    Signer,
    connect,
    signing,
)

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from marketplace.competing import CompetitionKeyDepository, CompetitionStore
    from marketplace.competitions import CompetitionMarketClient
    from marketplace.contracts import RegistryClient

competition_app = typer.Typer(help="ML competitions: private test sets, sealed models, signed scores.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

METRICS = ("accuracy", "macro_f1", "roc_auc", "log_loss", "rmse")
POLICIES = ("none", "organizer", "anyone")


@dataclass
class _Session:
    """One gateway: its HTTP client, the chain behind it, the contracts and the key manager."""

    http: Any
    account: LocalAccount
    competitions: CompetitionMarketClient
    registry: RegistryClient
    keys: CompetitionKeyDepository
    store: CompetitionStore

    def close(self) -> None:
        self.http.close()


def _session(gateway: str, signer: Signer) -> _Session:
    from marketplace.competitions import CompetitionMarketClient
    from marketplace.contracts import RegistryClient
    from marketplace.gateway_client import GatewayCompetitionKeys, GatewayCompetitionStore

    http, config, chain = connect(gateway, timeout=300)
    address = (config.get("contracts") or {}).get("competitions")
    if not address:
        http.close()
        raise typer.BadParameter(f"the gateway at {gateway} runs no competition market", param_hint="--gateway")
    return _Session(
        http=http, account=signer.unlock(http),
        competitions=CompetitionMarketClient(chain, address), registry=RegistryClient(chain, config["contracts"]["enclave_registry"]),
        keys=GatewayCompetitionKeys(http), store=GatewayCompetitionStore(http),
    )  # fmt: skip


def _fail(e: Exception) -> typer.Exit:
    err.print(f"[red]{type(e).__name__}[/red]: {e}")
    return typer.Exit(1)


@competition_app.command("create")
@signing
def create(
    test_set: Annotated[Path, typer.Argument(help="the private test set: a Sterling dataset package (safetensors with its schema)")],
    title: Annotated[str, typer.Option("--title", help="the competition's title")],
    prize: Annotated[int, typer.Option("--prize", min=1, help="the prize in escrow, wei or token units")],
    metric: Annotated[str, typer.Option("--metric", help=f"one of {', '.join(METRICS)}")] = "accuracy",
    hours: Annotated[float, typer.Option("--hours", min=0.001, help="length of the submission window, from now")] = 24.0,
    scoring_hours: Annotated[float, typer.Option("--scoring-hours", min=0.001, help="time after the window for private scores")] = 1.0,
    public_split: Annotated[
        float, typer.Option("--public-split", min=0.0001, max=0.9999, help="share of test rows on the public leaderboard")
    ] = 0.3,
    ladder_step: Annotated[float, typer.Option("--ladder-step", min=1e-6, help="the Ladder's step η (metric units)")] = 0.01,
    cap: Annotated[int, typer.Option("--cap", min=1, max=65535, help="submissions per participant")] = 5,
    max_parameters: Annotated[int, typer.Option("--max-parameters", min=0, help="largest model allowed (0: no limit)")] = 0,
    architectures: Annotated[
        str, typer.Option("--architectures", help="comma-separated: logistic_regression, mlp, cnn")
    ] = "logistic_regression,mlp,cnn",
    purchase: Annotated[str, typer.Option("--purchase", help=f"who may buy models after the close: {', '.join(POLICIES)}")] = "organizer",
    description: Annotated[str, typer.Option("--description", help="what the task is")] = "",
    training_data: Annotated[str, typer.Option("--training-data", help="where participants find public training data")] = "",
    dataset: Annotated[
        list[int] | None, typer.Option("--dataset", help="a Sterling dataset id participants may train on (repeatable)")
    ] = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Seal a test set to the key manager, escrow a prize and open a competition."""
    from enclave_worker.trusted.dataset import DatasetPackage
    from enclave_worker.trusted.evaluation import ARCHITECTURES
    from enclave_worker.trusted.onchain import Architecture, Metric, PurchasePolicy
    from marketplace.competing import Rules, open_competition
    from marketplace.competitions import CompetitionTerms
    from marketplace.errors import SterlingError

    if metric not in METRICS:
        raise typer.BadParameter(f"choose one of {', '.join(METRICS)}", param_hint="--metric")
    if purchase not in POLICIES:
        raise typer.BadParameter(f"choose one of {', '.join(POLICIES)}", param_hint="--purchase")
    names = [a.strip() for a in architectures.split(",") if a.strip()]
    if not names or any(n not in ARCHITECTURES for n in names):
        raise typer.BadParameter(f"a comma-separated list of {', '.join(ARCHITECTURES)}", param_hint="--architectures")
    try:
        package = DatasetPackage.from_bytes(test_set.read_bytes())
    except (OSError, SterlingError) as e:
        raise typer.BadParameter(f"{test_set} is not a Sterling dataset package: {e}", param_hint="TEST_SET") from e
    mask = Architecture(0)
    for name in names:
        mask |= ARCHITECTURES[name]
    session = _session(gateway, signer)
    try:
        now = session.competitions.chain.now()
        closes = now + max(1, round(hours * 3600))
        terms = CompetitionTerms(
            test_set_hash=bytes(32), schema_hash=bytes(32), rules_hash=bytes(32), prize=prize,  # type: ignore[arg-type]
            metric=Metric[metric.upper()], public_split_bps=round(public_split * 10_000), ladder_step=round(ladder_step * 1e6),
            opens_at=now, closes_at=closes, scoring_period=max(1, round(scoring_hours * 3600)), submission_cap=cap,
            max_parameters=max_parameters, architectures=mask, purchase_policy=PurchasePolicy[purchase.upper()],
        )  # fmt: skip
        rules = Rules(title=title, description=description, training_data=training_data, training_datasets=tuple(dataset or ()))
        with console.status("sealing the test set, depositing its key, escrowing the prize"):
            opened = open_competition(
                session.account, package, terms=terms, rules=rules, competitions=session.competitions, registry=session.registry,
                key_manager=session.keys, blobs=session.store,
            )  # fmt: skip
    except (SterlingError, OSError) as e:
        raise _fail(e) from e
    finally:
        session.close()
    console.print(
        f"competition [bold]{opened.competition_id}[/bold] is open until {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(closes))}: "
        f"test set {opened.test_set.content_hash.hex()[:16]}… ({opened.test_set.rows} rows) sealed to the key manager"
    )


@competition_app.command("submit")
@signing
def submit(
    competition_id: Annotated[int, typer.Argument(min=1, help="the competition")],
    weights: Annotated[Path | None, typer.Argument(help="safetensors with the model spec and input schema in their metadata")] = None,
    job: Annotated[int | None, typer.Option("--job", min=1, help="submit your completed job's model, sealed to the key manager")] = None,
    ask: Annotated[int, typer.Option("--ask", min=0, help="the price a buyer pays after the close (0: not for sale)")] = 0,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Seal a model to the key manager, have it admitted against the rules, and submit it on-chain."""
    from marketplace.competing import submit_job_model, submit_model
    from marketplace.errors import SterlingError

    if (weights is None) == (job is None):
        raise typer.BadParameter("give a weights file or --job, not both")
    session = _session(gateway, signer)
    try:
        with console.status("sealing, admitting and submitting the model"):
            if job is not None:
                entry = submit_job_model(
                    session.account,
                    job,
                    competition_id=competition_id,
                    ask_price=ask,
                    competitions=session.competitions,
                    key_manager=session.keys,
                )
            else:
                assert weights is not None
                entry = submit_model(
                    session.account, weights.read_bytes(), competition_id=competition_id, ask_price=ask,
                    competitions=session.competitions, registry=session.registry, key_manager=session.keys, blobs=session.store,
                )  # fmt: skip
    except (SterlingError, OSError) as e:
        raise _fail(e) from e
    finally:
        session.close()
    console.print(
        f"submitted as entry [bold]{entry.index}[/bold] of competition {competition_id} (weights {entry.weights_hash.hex()[:16]}…)"
    )


@competition_app.command("list")
def list_competitions(gateway: GatewayOption = DEFAULT_GATEWAY, json_out: JsonOption = False) -> None:
    """Every competition: phase, metric, prize, submissions and the public best."""
    import httpx

    try:
        rows = httpx.get(f"{gateway}/api/competitions", timeout=30).raise_for_status().json()
    except (httpx.HTTPError, ValueError) as e:
        raise typer.BadParameter(f"no Sterling gateway at {gateway}: {e}", param_hint="--gateway") from e
    if json_out:
        console.print_json(json.dumps(rows))
        return
    table = Table("id", "phase", "metric", "prize", "entries", "public best", "closes")
    for c in rows:
        best = "-" if c["public_best"] is None else f"{c['public_best']:.4f}"
        closes = time.strftime("%Y-%m-%d %H:%M", time.localtime(c["closes_at"]))
        table.add_row(str(c["competition_id"]), c["phase"], c["metric"], c["prize_wei"], str(c["submission_count"]), best, closes)
    console.print(table)


@competition_app.command("leaderboard")
def leaderboard(
    competition_id: Annotated[int, typer.Argument(min=1)], gateway: GatewayOption = DEFAULT_GATEWAY, json_out: JsonOption = False
) -> None:
    """The leaderboard: every entry's public score (through the Ladder) and, after the close, its private score."""
    import httpx

    try:
        response = httpx.get(f"{gateway}/api/competitions/{competition_id}", timeout=60)
    except httpx.HTTPError as e:
        raise typer.BadParameter(f"no Sterling gateway at {gateway}: {e}", param_hint="--gateway") from e
    if response.status_code == 404:
        raise _fail(LookupError(response.json()["detail"]))
    c = response.json()
    if json_out:
        console.print_json(json.dumps(c))
        return
    title = (c.get("rules") or {}).get("title") or f"competition {competition_id}"
    now = time.time()
    left = "" if c["phase"] != "submissions" else f", {max(0, c['closes_at'] - now) / 3600:.1f} h left"
    direction = "higher" if c["higher_is_better"] else "lower"
    console.print(f"[bold]{title}[/bold]: {c['phase']}{left}; {c['metric']} ({direction} is better), prize {c['prize_wei']}")
    entries = sorted(
        c["submissions"],
        key=lambda s: (
            s["private_score"] is None,
            -(s["private_score"] or 0) if c["higher_is_better"] else (s["private_score"] or 0),
            s["index"],
        ),
    )
    table = Table("entry", "participant", "public (Ladder)", "private", "ask", title=f"η = {c['ladder_step']}")
    for s in entries:
        public = "-" if s["public_score"] is None else f"{s['public_score']:.4f}"
        private = "-" if s["private_score"] is None else f"{s['private_score']:.6f}"
        mark = " ★" if c["status"] == "closed" and c["leader"] == s["index"] else ""
        table.add_row(f"{s['index']}{mark}", s["participant"], public, private, s["ask_price_wei"])
    console.print(table)


@competition_app.command("close")
@signing
def close(
    competition_id: Annotated[int, typer.Argument(min=1)],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Close a competition: the organizer once every entry has its private score, anyone after the scoring period."""
    from marketplace.errors import SterlingError

    session = _session(gateway, signer)
    try:
        session.competitions.close(session.account, competition_id)
        record = session.competitions.competition(competition_id)
    except SterlingError as e:
        raise _fail(e) from e
    finally:
        session.close()
    winner = "nobody was scored: the prize went back to the organizer" if record.leader is None else f"entry {record.leader} wins"
    console.print(f"competition {competition_id} closed; {winner}")


@competition_app.command("buy")
@signing
def buy(
    competition_id: Annotated[int, typer.Argument(min=1)],
    index: Annotated[int, typer.Argument(min=0, help="the entry to buy")],
    out: Annotated[Path, typer.Option("--out", help="where to write the decrypted safetensors")] = Path("model.safetensors"),
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="the purchase's X25519 key (default: OUT.x25519); reused if it exists")
    ] = None,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Buy an entry at its ask price, get its key from the key manager and decrypt it.

    The purchase key is written to ``--key-file`` BEFORE paying, so a purchase whose key could not
    be fetched (the gateway away) is opened later by running the same command again: it does not pay twice.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from enclave_worker.trusted import keywrap
    from marketplace.competing import open_bought_model
    from marketplace.errors import SterlingError

    key_path = key_file or out.with_name(out.name + ".x25519")
    if key_path.exists():
        private = X25519PrivateKey.from_private_bytes(key_path.read_bytes())
    else:
        private = X25519PrivateKey.generate()
        raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        key_path.write_bytes(raw)
        key_path.chmod(0o600)
    session = _session(gateway, signer)
    try:
        market = session.competitions
        bought = market.purchase_key(competition_id, index, session.account.address)
        if bought == bytes(32):
            market.buy(session.account, competition_id, index, keywrap.public_key_bytes(private))
        elif bought != keywrap.public_key_bytes(private):
            raise _fail(ValueError(f"you bought entry {index} with another key than {key_path}'s: pass that purchase's --key-file"))
        weights = open_bought_model(
            session.account.address, competition_id, index, private, competitions=market, key_manager=session.keys, blobs=session.store
        )
        out.write_bytes(weights)
    except (SterlingError, OSError) as e:
        raise _fail(e) from e
    finally:
        session.close()
    console.print(f"bought entry {index} of competition {competition_id}: {len(weights)} bytes of safetensors in {out}")


@competition_app.command("withdraw")
@signing
def withdraw(
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Withdraw your prizes and model sales."""
    from marketplace.errors import SterlingError

    session = _session(gateway, signer)
    try:
        amount, _ = session.competitions.withdraw(session.account)
    except SterlingError as e:
        raise _fail(e) from e
    finally:
        session.close()
    console.print(f"withdrew {amount} to {session.account.address}")
