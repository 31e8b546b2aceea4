"""``sterling infer`` and ``sterling models``: ask served models, list them, list your own (docs/inference.md).

Every command talks to a gateway (``--gateway``, default the local ``sterling up``) and to the chain
through its JSON-RPC relay; transactions and vouchers are signed here, by a keystore account
(``--account NAME`` or ``--keystore FILE``: ``sterling account``), one of a local chain's
development accounts (``--dev-account N``), or the hex key in ``STERLING_PRIVATE_KEY``. The inference enclave's key always comes from the
registry on-chain, never from the gateway.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
    from marketplace.serving import InferenceClient

models_app = typer.Typer(help="Served models: the catalogue, and listing your own.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _read_rows(path: Path) -> Any:
    """A CSV of numbers (an optional header row of names is skipped) as float32 rows."""
    import numpy as np

    try:
        with path.open(newline="") as f:
            lines = [row for row in csv.reader(f) if row]
    except OSError as e:
        raise typer.BadParameter(f"cannot read {path}: {e}") from e
    if lines and not _numeric(lines[0]):
        lines = lines[1:]
    if not lines:
        raise typer.BadParameter(f"{path} holds no rows")
    width = len(lines[0])
    for number, row in enumerate(lines, start=1):
        if len(row) != width or not _numeric(row):
            raise typer.BadParameter(f"{path}: row {number} is not {width} numbers")
    rows = np.asarray(lines, dtype=np.float32)
    if not np.isfinite(rows).all():
        raise typer.BadParameter(f"{path} holds a NaN or an infinity")
    return rows


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _client(gateway: str, signer: Signer) -> tuple[InferenceClient, Any]:
    from marketplace.contracts import RegistryClient
    from marketplace.model_market import ModelMarketClient
    from marketplace.serving import InferenceClient, http_transport

    http, config, chain = connect(gateway, timeout=120)
    market_address = (config.get("contracts") or {}).get("model_market")
    if not market_address:
        http.close()
        raise typer.BadParameter(f"the gateway at {gateway} serves no model market", param_hint="--gateway")
    client = InferenceClient(
        signer.unlock(http), model_market=ModelMarketClient(chain, market_address),
        registry=RegistryClient(chain, config["contracts"]["enclave_registry"]), transport=http_transport(gateway),
    )  # fmt: skip
    return client, http


@signing
def infer(
    model_id: Annotated[int, typer.Argument(help="the listed model's id")],
    input_csv: Annotated[Path, typer.Argument(help="rows to ask about: a CSV of numbers, one row per line (a header row is skipped)")],
    out: Annotated[Path, typer.Option("--out", help="where to write the predictions (CSV)")] = Path("predictions.csv"),
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
    deposit: Annotated[int, typer.Option("--deposit", help="buy this much credit (wei or token units) first; 0: none")] = 0,
    batch_rows: Annotated[int, typer.Option("--batch-rows", min=1, help="rows per encrypted request")] = 4096,
) -> None:
    """Ask a served model about every row of a CSV; the rows are encrypted to the inference enclave's
    on-chain key, every answer's receipt is verified, and each request is paid with a voucher."""
    import numpy as np

    from marketplace.errors import SterlingError

    rows = _read_rows(input_csv)
    client, http = _client(gateway, signer)
    try:
        detail = http.get(f"/api/models/{model_id}")
        if detail.status_code != 200:
            raise typer.BadParameter(f"model {model_id}: {detail.json().get('detail')}")
        listing = detail.json()
        enclave = listing.get("serving_enclave")
        if not enclave:
            raise typer.BadParameter(f"the gateway does not serve model {model_id}")
        if deposit:
            client.deposit(model_id, deposit, enclave)
            console.print(f"deposited {deposit} on model {model_id}'s channel")
        client.sync(model_id)
        price = int(listing["price_per_query_wei"])
        channel = client.model_market.channel(model_id, client.account.address)
        totals = client.book.totals(model_id, client.account.address)
        if int(channel.deposited) - totals.amount < price * len(rows):
            err.print(
                f"[red]not enough credit:[/red] {len(rows)} rows cost {price * len(rows)}, the channel has "
                f"{int(channel.deposited) - totals.amount} left; add --deposit"
            )
            raise typer.Exit(1)
        with Progress(
            TextColumn("encrypted queries"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn(), console=err
        ) as progress:
            task = progress.add_task("rows", total=len(rows))
            values = client.query_many(
                model_id, rows, enclave=enclave, batch_rows=batch_rows, progress=lambda done, total: progress.update(task, completed=done)
            )  # fmt: skip
    except SterlingError as e:
        err.print(f"[red]refused:[/red] {type(e).__name__}: {e}")
        raise typer.Exit(1) from e
    finally:
        http.close()
    _write_predictions(out, np.asarray(values), listing["output_policy"], int(listing["output_param"]))
    console.print(f"{len(rows)} predictions of model {model_id} written to {out} (verified receipts from enclave {enclave})")


def _write_predictions(out: Path, values: Any, policy: str, param: int) -> None:
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        if policy == "label":
            writer.writerow(["label"])
            writer.writerows([[int(v)] for v in values.reshape(-1)])
        elif policy == "top_k":
            writer.writerow([f"top_{i + 1}" for i in range(values.shape[1])])
            writer.writerows([[int(v) for v in row] for row in values])
        else:
            writer.writerow([f"p_{i}" for i in range(values.shape[1])])
            writer.writerows([[f"{float(v):.{param}f}" for v in row] for row in values])


@models_app.command("list")
def list_models(gateway: GatewayOption = DEFAULT_GATEWAY, json_out: JsonOption = False) -> None:
    """The model catalogue: price, output policy, query cap, and the ε it was trained with if trained here."""
    import httpx

    try:
        models = httpx.get(f"{gateway}/api/models", timeout=30).json()
    except (httpx.HTTPError, ValueError) as e:
        raise typer.BadParameter(f"no Sterling gateway at {gateway}: {e}", param_hint="--gateway") from e
    if json_out:
        console.print_json(json.dumps(models))
        return
    table = Table("id", "status", "price / row", "output", "cap / client", "trained", "owner")
    for m in models:
        output = m["output_policy"] + (f" {m['output_param']}" if m["output_policy"] != "label" else "")
        trained = f"job {m['source_job_id']}, ε {m['epsilon']:g}" if m["source_job_id"] else "elsewhere"
        table.add_row(str(m["model_id"]), m["status"], m["price_per_query_wei"], output, f"{m['query_cap']:,}", trained, m["owner"])
    console.print(table)


@models_app.command("publish")
@signing
def publish(
    weights: Annotated[Path, typer.Argument(help="safetensors written by marketplace.serving.model_weights (spec and schema inside)")],
    price: Annotated[int, typer.Option("--price", min=0, help="price per row, wei or token units")],
    cap: Annotated[int, typer.Option("--cap", min=1, help="rows one client may ever ask (the extraction budget)")],
    policy: Annotated[str, typer.Option("--policy", help="label, top_k or probabilities")] = "label",
    param: Annotated[int, typer.Option("--param", min=0, help="k for top_k, decimals for probabilities")] = 0,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Seal a model for the key manager, upload it, deposit its key and list it for serving."""

    from enclave_worker.trusted.inference import weights_spec
    from enclave_worker.trusted.onchain import OutputPolicy
    from marketplace.errors import SterlingError
    from marketplace.gateway_client import GatewayModelKeys, GatewayModelStore
    from marketplace.serving import list_model

    try:
        raw = weights.read_bytes()
        spec = weights_spec(raw)
        output_policy = OutputPolicy[policy.upper()]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise typer.BadParameter(f"{weights} is not a Sterling model (safetensors with its spec and schema), or bad --policy: {e}") from e
    client, http = _client(gateway, signer)
    try:
        listed = list_model(
            raw, spec, client.account, price_per_query=price, output_policy=output_policy, output_param=param, query_cap=cap,
            model_market=client.model_market, registry=client.registry, key_manager=GatewayModelKeys(http),
            store=GatewayModelStore(http),
        )  # fmt: skip
    except SterlingError as e:
        err.print(f"[red]refused:[/red] {type(e).__name__}: {e}")
        raise typer.Exit(1) from e
    finally:
        http.close()
    console.print(f"listed model [bold]{listed.model_id}[/bold]: weights sha256 {hashlib.sha256(raw).hexdigest()}")


@models_app.command("redeem")
def redeem(
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="the state directory of the sterling up that served the queries (its inference/ ledger)")
    ] = Path(".sterling"),
    min_amount: Annotated[int, typer.Option("--min-amount", min=1, help="redeem a channel only if it owes at least this much more")] = 1,
    gateway: GatewayOption = DEFAULT_GATEWAY,
) -> None:
    """Redeem, as the inference enclave's operator, the latest voucher served on every channel: one
    transaction per channel for any number of queries (``sterling up`` also does it every
    ``up.redeem_interval`` seconds). Signs with ``STERLING_PRIVATE_KEY``, or else the operator key
    in the state directory's ``accounts.json``."""
    import httpx

    from enclave_worker.serving import VOUCHER_LEDGER, VoucherLedger, redeem_vouchers
    from marketplace.chain import connect_gateway
    from marketplace.errors import ChainUnavailable, SterlingError
    from marketplace.model_market import ModelMarketClient
    from sterling.up import LocalAccounts

    ledger_path = state_dir / "inference" / VOUCHER_LEDGER
    if not ledger_path.exists():
        raise typer.BadParameter(f"no voucher ledger at {ledger_path}: this state directory served no queries", param_hint="--state-dir")
    if os.environ.get("STERLING_PRIVATE_KEY"):
        operator = Signer().unlock(None)
    elif (state_dir / "accounts.json").exists():
        operator = LocalAccounts.load_or_create(state_dir / "accounts.json", dev_count=0).operator
    else:
        raise typer.BadParameter("set STERLING_PRIVATE_KEY to the operator's key, or point --state-dir at sterling up's state")
    try:
        config = httpx.get(f"{gateway}/api/config", timeout=30).json()
        chain = connect_gateway(gateway)
    except (httpx.HTTPError, ValueError, ChainUnavailable) as e:
        raise typer.BadParameter(f"no Sterling gateway at {gateway}: {e}", param_hint="--gateway") from e
    market_address = (config.get("contracts") or {}).get("model_market")
    if not market_address:
        raise typer.BadParameter(f"the gateway at {gateway} serves no model market", param_hint="--gateway")
    vouchers = VoucherLedger(ledger_path, writable=False).latest()
    try:
        market = ModelMarketClient(chain, market_address)
        redeemed = redeem_vouchers(vouchers, model_market=market, operator=operator, min_amount=min_amount)
    except SterlingError as e:
        err.print(f"[red]refused:[/red] {type(e).__name__}: {e}")
        raise typer.Exit(1) from e
    table = Table("model", "client", "queries", "paid (wei)", "operator fee (wei)")
    for r in redeemed:
        table.add_row(str(r.model_id), r.client, f"{r.queries:,}", str(r.paid), str(r.fee))
    console.print(table)
    console.print(f"redeemed {len(redeemed)} of {len(vouchers)} channels as {operator.address}")
