"""``sterling dataset``: publish a table as an encrypted dataset, and manage listings.

``dataset publish data.csv`` (or ``.parquet``) reads the table by the web UI's rules
(:mod:`marketplace.tables`), shows its shape and the terms before anything is signed, then
encrypts it here with a fresh data key, uploads the ciphertext to the gateway (with progress),
wraps the key to the key manager's attested key from the registry on-chain (never to a key the
gateway names), deposits it with the provider's signature, and lists the dataset. The plaintext
never leaves this machine. ``ls``, ``show``, ``describe`` (publish or replace the datasheet),
``pause``, ``resume``, ``top-up``, ``reprice`` and ``delist`` read and change listings; every read
command takes ``--json``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from sterling.cli_common import (
    DEFAULT_GATEWAY,
    FROM_OPTIONS,
    GatewayOption,
    JsonOption,
    Signer,
    connect,
    get_json,
    refused,
    signing,
)

dataset_app = typer.Typer(
    help="Datasets: publish a table encrypted, list, show, describe, pause, resume, top up, reprice, delist.", no_args_is_help=True
)
console = Console()
err = Console(stderr=True)
IdArgument = Annotated[int, typer.Argument(min=1, help="the dataset's id")]


class TableTaskName(StrEnum):
    """What a published table's label is (``--task``)."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
    SURVIVAL = "survival"


def _expiry(value: str | None) -> int:
    if value is None:
        return 0
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD, or an ISO date and time)", param_hint="--expiry") from e
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


@dataset_app.command("publish")
@signing
def publish(
    table_file: Annotated[Path, typer.Argument(help="the table: CSV with a header row, or Parquet")],
    price: Annotated[int, typer.Option("--price", min=0, help="price per job, wei or token units")],
    epsilon_per_job: Annotated[float, typer.Option("--epsilon-per-job", min=0.0, help="the most ε one job may spend")],
    total_epsilon: Annotated[float, typer.Option("--total-epsilon", min=0.0, help="the ε budget all jobs together may spend")],
    max_delta: Annotated[float, typer.Option("--max-delta", help="the largest δ a job may ask for")] = 1e-4,
    label: Annotated[str | None, typer.Option("--label", help="the label column (default: the last)")] = None,
    expiry: Annotated[str | None, typer.Option("--expiry", help="no job after this date (YYYY-MM-DD); default never")] = None,
    allow: Annotated[str | None, typer.Option("--allow", help="sell only to these accounts (comma-separated addresses)")] = None,
    datasheet_file: Annotated[
        Path | None,
        typer.Option("--datasheet", help="the listing's datasheet, JSON (docs/datasheets.md); rows and version filled in if left out"),
    ] = None,
    bound: Annotated[
        list[str] | None,
        typer.Option("--bound", help="declared bounds of a feature, NAME=LOW:HIGH (repeat); the enclave clips and scales to them"),
    ] = None,
    task_name: Annotated[TableTaskName, typer.Option("--task", help="what the label is")] = TableTaskName.CLASSIFICATION,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="regression: a target column and its declared bounds, NAME=LOW:HIGH (repeat for several outputs)"),
    ] = None,
    time_column: Annotated[str | None, typer.Option("--time", help="survival: the follow-up time column")] = None,
    event_column: Annotated[str | None, typer.Option("--event", help="survival: the event column, 1 observed or 0 censored")] = None,
    time_bins: Annotated[
        str | None, typer.Option("--time-bins", help="survival: the declared ends of the follow-up intervals (e.g. 365,730,1095)")
    ] = None,
    category: Annotated[
        list[str] | None,
        typer.Option("--category", help="a categorical feature column and its declared categories, NAME=A,B,C (repeat)"),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="sign without asking (the terms are still shown)")] = False,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    who: Signer = FROM_OPTIONS,
    json_out: JsonOption = False,
) -> None:
    """Encrypt a table here, upload it, deposit its key with the key manager and list it with these terms and datasheet."""
    import tempfile

    from eth_utils import is_address, to_checksum_address

    from marketplace.chain import Wei
    from marketplace.contracts import MarketClient, RegistryClient, Terms, delta_units, epsilon_units
    from marketplace.errors import InvalidDataset, SterlingError
    from marketplace.gateway_client import GatewayDatasetKeys
    from marketplace.provider import list_dataset
    from marketplace.remote_blobs import DownloadProgress, GatewayBlobStore
    from marketplace.tables import InvalidTable, label_summary, read_table

    allowed = tuple(a.strip() for a in allow.split(",") if a.strip()) if allow else ()
    bad = [a for a in allowed if not is_address(a)]
    if bad:
        raise typer.BadParameter(f"not addresses: {', '.join(bad)}", param_hint="--allow")
    terms = Terms(
        price_per_job=Wei(price), max_epsilon_per_job=epsilon_units(epsilon_per_job), total_epsilon_budget=epsilon_units(total_epsilon),
        max_delta=delta_units(max_delta), expiry=_expiry(expiry),
    )  # fmt: skip
    if not 0 < epsilon_per_job <= total_epsilon:
        raise typer.BadParameter("the ε per job must be positive and at most the total budget", param_hint="--epsilon-per-job")
    bounds = _bounds(bound or [])
    table_task = _table_task(task_name.value, target or [], time_column, event_column, time_bins, label)
    categories = _categories(category or [])
    try:
        with err.status(f"reading {table_file}"):
            package = read_table(table_file, label_column=label, bounds=bounds or None, task=table_task, categories=categories or None)
    except InvalidTable as e:
        raise typer.BadParameter(str(e), param_hint="TABLE_FILE") from e
    except InvalidDataset as e:
        raise typer.BadParameter(str(e), param_hint="--bound, --target, --time-bins or --category") from e
    datasheet = _datasheet(datasheet_file, package.schema, rows=package.rows, check_rows=True) if datasheet_file is not None else None
    http, config, chain = connect(gateway, timeout=300)
    try:
        signer = who.unlock(http)
        token = config.get("payment_token")
        unit = token["symbol"] if token else "wei"
        schema = package.schema
        table = Table("", "", title=f"{table_file.name}: {package.rows:,} rows")
        if datasheet is not None:
            table.add_row("title", datasheet.title)
            table.add_row("tags", ", ".join(datasheet.tags) or "none")
        else:
            table.add_row("datasheet", "none: consumers will see only \"Dataset #N\" (--datasheet F, or `dataset describe` later)")
        declared = sum(b is not None for b in schema.feature_bounds or ())
        scaled = f"{declared} of {len(schema.feature_names)} features" if declared else "none: features are not scaled"
        table.add_row("declared bounds", scaled)
        table.add_row(
            "features", f"{len(schema.feature_names)}: {', '.join(schema.feature_names[:8])}{' …' if len(schema.feature_names) > 8 else ''}"
        )
        table.add_row("label", label_summary(schema))
        if schema.categories:
            table.add_row("categorical", "; ".join(f"{name}: {', '.join(values[:6])}{' …' if len(values) > 6 else ''}"
                                                   for name, values in schema.categories))  # fmt: skip
        table.add_row("price per job", f"{price:,} {unit}")
        table.add_row("ε per job / total", f"{epsilon_per_job:g} / {total_epsilon:g}")
        table.add_row("max δ", f"{max_delta:g}")
        table.add_row("expires", expiry or "never")
        table.add_row("buyers", ", ".join(allowed) if allowed else "anyone")
        table.add_row("provider", signer.address)
        err.print(table)
        if not yes and not typer.confirm("Encrypt, upload and list it with these terms?", err=True):
            err.print("nothing was sent")
            raise typer.Exit(1)
        market = MarketClient(chain, config["contracts"]["job_market"])
        registry = RegistryClient(chain, config["contracts"]["enclave_registry"])
        with (
            Progress(
                TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err, transient=True
            ) as bar,
            tempfile.TemporaryDirectory() as cache,
        ):
            task = bar.add_task("encrypting", total=None)

            def shown(p: DownloadProgress) -> None:
                bar.update(task, description=f"uploading {p.digest[:12]}…", completed=p.done, total=p.total)

            with GatewayBlobStore(gateway, Path(cache), progress=shown, timeout=300) as blobs:
                try:
                    listed = list_dataset(
                        package, signer, terms=terms, market=market, registry=registry, key_manager=GatewayDatasetKeys(http),
                        blobs=blobs, allowed_consumers=tuple(to_checksum_address(a) for a in allowed), uri="sterling-blob:",
                        datasheet=datasheet,
                    )  # fmt: skip
                except SterlingError as e:
                    raise refused(e) from e
    finally:
        http.close()
    summary = {
        "dataset_id": int(listed.dataset_id), "content_hash": listed.content_hash.hex(), "schema_hash": listed.schema_hash.hex(),
        "ciphertext_bytes": listed.ciphertext_bytes, "rows": package.rows, "transaction": listed.tx.tx_hash,
        "datasheet_hash": listed.datasheet_hash.hex() if listed.datasheet_hash else None,
    }  # fmt: skip
    if json_out:
        console.print_json(json.dumps(summary))
    else:
        console.print(
            f"listed dataset [bold]{listed.dataset_id}[/bold]: {package.rows:,} rows, {listed.ciphertext_bytes:,} bytes of ciphertext "
            f"(content {listed.content_hash.hex()[:16]}…), tx {listed.tx.tx_hash}"
        )


def _bounds(values: list[str], option: str = "--bound") -> dict[str, tuple[float, float]]:
    """``NAME=LOW:HIGH`` options as declared bounds by column name."""
    bounds: dict[str, tuple[float, float]] = {}
    for value in values:
        name, _, span = value.partition("=")
        low, _, high = span.partition(":")
        try:
            bounds[name.strip()] = (float(low), float(high))
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not NAME=LOW:HIGH (e.g. income=0:500000)", param_hint=option) from None
        if not name.strip():
            raise typer.BadParameter(f"{value!r} names no column", param_hint=option)
    return bounds


def _categories(values: list[str]) -> dict[str, list[str]]:
    """``NAME=A,B,C`` options as declared vocabularies by column name."""
    categories: dict[str, list[str]] = {}
    for value in values:
        name, _, listed = value.partition("=")
        vocabulary = [v.strip() for v in listed.split(",")]
        if not name.strip() or not listed or any(not v for v in vocabulary):
            raise typer.BadParameter(f"{value!r} is not NAME=A,B,C (e.g. sex=F,M)", param_hint="--category")
        categories[name.strip()] = vocabulary
    return categories


def _table_task(
    task: str, targets: list[str], time_column: str | None, event_column: str | None, time_bins: str | None, label: str | None
) -> Any:
    """The table's :class:`~marketplace.tables.Regression` or :class:`~marketplace.tables.Survival` from the
    options (``None`` for classification), each option refused where its task does not take it."""
    from marketplace.tables import Regression, Survival

    survival_given = [o for o, v in (("--time", time_column), ("--event", event_column), ("--time-bins", time_bins)) if v is not None]
    if task != "regression" and targets:
        raise typer.BadParameter("--target names a regression's target column; add --task regression", param_hint="--target")
    if task != "survival" and survival_given:
        given = ", ".join(survival_given)
        raise typer.BadParameter(f"{given} describe a survival table; add --task survival", param_hint=survival_given[0])
    if task != "classification" and label is not None:
        columns = "--target" if task == "regression" else "--time and --event"
        raise typer.BadParameter(f"a {task} table names its label columns with {columns}", param_hint="--label")
    if task == "regression":
        if not targets:
            raise typer.BadParameter("a regression table needs --target NAME=LOW:HIGH (repeat for several)", param_hint="--target")
        return Regression(_bounds(targets, "--target"))
    if task == "survival":
        if time_column is None or event_column is None or time_bins is None:
            raise typer.BadParameter("a survival table needs --time, --event and --time-bins", param_hint="--task")
        try:
            bins = [float(b) for b in time_bins.split(",")]
        except ValueError:
            raise typer.BadParameter(f"{time_bins!r} is not a list of numbers (e.g. 365,730,1095)", param_hint="--time-bins") from None
        return Survival(time_column, event_column, bins)
    return None


def _datasheet(path: Path, schema: Any, *, rows: int | None, check_rows: bool) -> Any:
    """The datasheet file, with ``version`` and (when known) ``rows`` filled in when left out, checked against the dataset."""
    from marketplace.datasheet import DATASHEET_VERSION, Datasheet, InvalidDatasheet

    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise typer.BadParameter(f"cannot read {path} as JSON: {e}", param_hint="--datasheet") from e
    if isinstance(document, dict):
        document.setdefault("version", DATASHEET_VERSION)
        if rows is not None:
            document.setdefault("rows", rows)
    try:
        datasheet = Datasheet.from_json(document)
        datasheet.check_fits(schema, rows=rows if check_rows else None)
    except InvalidDatasheet as e:
        problems = "\n".join(f"  {where or 'datasheet'}: {message}" for where, message in e.problems)
        raise typer.BadParameter(f"{path} is not a datasheet for this dataset:\n{problems}", param_hint="--datasheet") from e
    return datasheet


@dataset_app.command("ls")
def ls(
    search: Annotated[str | None, typer.Option("--search", "-q", help="words the datasheet must contain")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="only datasets with this tag (repeat: all of them)")] = None,
    schema: Annotated[str | None, typer.Option("--schema", help="only datasets of this schema hash")] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="only this provider's datasets (an address)")] = None,
    status: Annotated[list[str] | None, typer.Option("--status", help="active, paused or delisted (repeat for several)")] = None,
    sort: Annotated[str, typer.Option("--sort", help="listed, price, remaining_epsilon, title or rows; a leading - reverses")] = "-listed",
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    json_out: JsonOption = False,
) -> None:
    """Find datasets by their datasheets (active and paused unless --status says otherwise), newest first."""
    http, _, _ = connect(gateway, timeout=60)
    try:
        page = get_json(
            http, "/api/datasets", q=search, tag=tag, schema_hash=schema, provider=provider, status=status, sort=sort, limit=limit,
            offset=offset,
        )  # fmt: skip
    finally:
        http.close()
    if json_out:
        console.print_json(json.dumps(page))
        return
    shown = f"{offset + 1}–{offset + len(page['items'])} of {page['total']}" if page["items"] else f"0 of {page['total']}"
    table = Table("dataset", "title", "rows", "label", "status", "price", "ε left / total", "provider", title=f"datasets {shown}")
    for d in page["items"]:
        sheet = d.get("datasheet")
        budget = f"{d['remaining_epsilon']:g} / {d['total_epsilon']:g}"
        title, rows, label_name = (sheet["title"], f"{sheet['rows']:,}", sheet["label_name"]) if sheet else ("(no datasheet)", "", "")
        who = sheet["provider_name"] if sheet else d["provider"]
        table.add_row(str(d["id"]), title, rows, label_name, d["status"], d["price_wei"], budget, who)
    console.print(table)


@dataset_app.command("show")
def show(dataset_id: IdArgument, gateway: GatewayOption = DEFAULT_GATEWAY, json_out: JsonOption = False) -> None:
    """One dataset: terms, schema, ε budget and the jobs that used it."""
    from enclave_worker.trusted.dataset import Schema
    from marketplace.tables import label_summary

    http, _, _ = connect(gateway, timeout=60)
    try:
        d = get_json(http, f"/api/datasets/{dataset_id}")
    finally:
        http.close()
    if json_out:
        console.print_json(json.dumps(d))
        return
    sheet = d.get("datasheet")
    if sheet:
        console.print(f"[bold]{sheet['title']}[/bold] ({sheet['rows']:,} rows; {sheet['license']}; by {sheet['provider_name']})")
        console.print(sheet["description"])
        if sheet["tags"]:
            console.print("tags: " + ", ".join(sheet["tags"]))
    console.print(f"[bold]dataset {d['id']}[/bold]: {d['status']}, provider {d['provider']}")
    console.print(f"price {d['price_wei']} per job; ε per job {d['max_epsilon_per_job']:g}; max δ {d['max_delta']:g}")
    console.print(
        f"ε: {d['spent_epsilon']:g} spent, {d['reserved_epsilon']:g} reserved, {d['remaining_epsilon']:g} left of {d['total_epsilon']:g}"
    )
    if d.get("schema"):
        schema = d["schema"]
        label_name = sheet["label"]["name"] if sheet else "label"
        console.print(f"{label_name} (the label): {label_summary(Schema.from_json(schema))}")
        columns = Table("column", "description", "unit", "declared bounds", title=f"{len(schema['feature_names'])} feature(s)")
        for c in d.get("columns") or [{"name": n, "description": "", "unit": "", "bounds": None} for n in schema["feature_names"]]:
            columns.add_row(c["name"], c["description"], c["unit"], f"{c['bounds'][0]:g} … {c['bounds'][1]:g}" if c["bounds"] else "")
        console.print(columns)
    console.print(f"jobs: {', '.join(map(str, d['job_ids'])) or 'none'}")


@dataset_app.command("describe")
def describe(
    dataset_id: IdArgument,
    datasheet_file: Annotated[Path, typer.Option("--datasheet", help="the new datasheet, JSON (docs/datasheets.md)")],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    who: Signer = FROM_OPTIONS,
) -> None:
    """Publish or replace a listed dataset's datasheet: checked against its schema, stored by the gateway, its hash put on-chain.

    ``rows`` may be left out when the dataset already has a datasheet (its row count is kept).
    """
    from enclave_worker.trusted.dataset import Schema
    from marketplace.errors import InvalidDataset
    from marketplace.gateway_client import GatewayRequestFailed, publish_datasheet

    http, _, _ = connect(gateway, timeout=60)
    try:
        current = get_json(http, f"/api/datasets/{dataset_id}")
        if not current.get("schema"):
            err.print(f"[red]the gateway does not hold dataset {dataset_id}'s schema: nothing to check the datasheet against[/red]")
            raise typer.Exit(1)
        try:
            schema = Schema.from_json(current["schema"])
        except InvalidDataset as e:
            err.print(f"[red]dataset {dataset_id}'s schema is not one this version reads: {e}[/red]")
            raise typer.Exit(1) from e
        previous = current.get("datasheet")
        datasheet = _datasheet(datasheet_file, schema, rows=previous["rows"] if previous else None, check_rows=False)
        try:
            digest = publish_datasheet(http, datasheet)
        except GatewayRequestFailed as e:
            err.print(f"[red]the gateway refused the datasheet: {e}[/red]")
            raise typer.Exit(1) from e
    finally:
        http.close()
    _transact(gateway, who, lambda m, s: m.set_datasheet(s, dataset_id, digest),
              f"dataset {dataset_id}'s datasheet is now {digest.hex()[:16]}… ({datasheet.title!r})")  # fmt: skip


def _transact(gateway: str, signer_choice: Signer, action: Any, done: str) -> None:
    """Sign ``action(market, signer)`` and say ``done``; a refusal in words."""
    from marketplace.contracts import MarketClient
    from marketplace.errors import SterlingError

    http, config, chain = connect(gateway, timeout=120)
    try:
        signer = signer_choice.unlock(http)
        market = MarketClient(chain, config["contracts"]["job_market"])
        try:
            tx = action(market, signer)
        except SterlingError as e:
            raise refused(e) from e
    finally:
        http.close()
    console.print(f"{done} (tx {tx.tx_hash})")


@dataset_app.command("pause")
@signing
def pause(
    dataset_id: IdArgument,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Stop taking new jobs (jobs already created go on)."""
    _transact(gateway, signer,
              lambda m, s: m.set_dataset_paused(s, dataset_id, True), f"paused dataset {dataset_id}")  # fmt: skip


@dataset_app.command("resume")
@signing
def resume(
    dataset_id: IdArgument,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Take new jobs again."""
    _transact(gateway, signer,
              lambda m, s: m.set_dataset_paused(s, dataset_id, False), f"resumed dataset {dataset_id}")  # fmt: skip


@dataset_app.command("top-up")
@signing
def top_up(
    dataset_id: IdArgument,
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="ε to add to the total budget")],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Add ε to the dataset's total privacy budget."""
    from marketplace.contracts import epsilon_units

    added = epsilon_units(epsilon)
    _transact(gateway, signer,
              lambda m, s: m.top_up_budget(s, dataset_id, added), f"added {epsilon:g} ε to dataset {dataset_id}")  # fmt: skip


@dataset_app.command("reprice")
@signing
def reprice(
    dataset_id: IdArgument,
    price: Annotated[
        int, typer.Option("--price", min=0, help="the new price per job, wei or token units (jobs created before keep theirs)")
    ],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Change the price per job; the other terms stay."""
    import dataclasses

    from marketplace.chain import Wei

    def action(market: Any, signer: Any) -> Any:
        terms = market.dataset(dataset_id).terms
        return market.update_terms(signer, dataset_id, dataclasses.replace(terms, price_per_job=Wei(price)))

    _transact(gateway, signer, action, f"dataset {dataset_id} now costs {price:,} per job")


@dataset_app.command("delist")
@signing
def delist(
    dataset_id: IdArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask (delisting cannot be undone)")] = False,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    signer: Signer = FROM_OPTIONS,
) -> None:
    """Delist the dataset for good: no new jobs, no changes (jobs already created go on)."""
    if not yes and not typer.confirm(f"Delist dataset {dataset_id} for good?", err=True):
        err.print("nothing was sent")
        raise typer.Exit(1)
    _transact(gateway, signer,
              lambda m, s: m.delist_dataset(s, dataset_id), f"delisted dataset {dataset_id}")  # fmt: skip
