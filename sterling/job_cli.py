"""``sterling job``: create a training job, list and show jobs, watch one train, cancel it.

``job create`` checks each dataset's terms against the request first (status, ε per job, ε
left, δ, allow-lists) and shows what the job will cost before anything is signed; it makes the
consumer key the model will be sealed to and saves it, before the transaction is sent, in the same
key file the web UI saves (``sterling-job-N-key.json``, mode 0600), which ``sterling model fetch``
opens. ``job watch`` follows the gateway's live events (``/api/events``) and shows the epochs and
the ε spent so far. Every read command takes ``--json``; a refusal is a sentence and a non-zero exit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

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
    get_json,
    refused,
    signing,
)

job_app = typer.Typer(help="Training jobs: create, list, show, watch, cancel.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)
SETTLED = ("completed", "expired", "cancelled")
DEFAULT_DELTA = 1e-5


def eligibility(datasets: list[dict[str, Any]], *, epsilon: float, delta: float, consumer: str, spec_hash: str) -> list[str]:
    """Why each dataset would refuse the job (empty: none would), in the contracts' order of checks."""
    problems = []
    now = time.time()
    for d in datasets:
        where = f"dataset #{d['id']}"
        if d["status"] != "active":
            problems.append(f"{where} is {d['status']} and accepts no new jobs")
        if d["expiry"] and d["expiry"] <= now:
            problems.append(f"{where} has expired")
        if d["restricted"] and consumer.lower() not in (a.lower() for a in d["allowed_consumers"]):
            problems.append(f"{where} is offered only to an allow-list of buyers, and {consumer} is not on it")
        if d["models_restricted"] and spec_hash.lower() not in (h.lower().removeprefix("0x") for h in d["allowed_models"]):
            problems.append(f"{where} accepts only model specs its provider approved, and this one is not among them")
        if epsilon > d["max_epsilon_per_job"]:
            problems.append(f"{where} allows at most {d['max_epsilon_per_job']:g} ε per job; {epsilon:g} asked")
        if epsilon > d["remaining_epsilon"]:
            problems.append(f"{where} has only {d['remaining_epsilon']:g} ε left; {epsilon:g} asked")
        if delta > d["max_delta"]:
            problems.append(f"{where} allows δ ≤ {d['max_delta']:g}; {delta:g} asked")
    return problems


@job_app.command("create")
@signing
def create(
    datasets: Annotated[str, typer.Option("--datasets", help="dataset ids, comma-separated (e.g. 1,2)")],
    spec_file: Annotated[Path, typer.Option("--spec", help="the model spec (JSON; `sterling privacy` helps choose its noise)")],
    epsilon: Annotated[float, typer.Option("--epsilon", min=0.0, help="the ε the job may spend on each dataset")],
    delta: Annotated[float, typer.Option("--delta", help="the job's δ")] = DEFAULT_DELTA,
    worker_fee: Annotated[int, typer.Option("--worker-fee", min=0, help="the trainer's fee, wei or token units")] = 0,
    key_dir: Annotated[Path, typer.Option("--key-dir", help="where the consumer key file is saved")] = Path("."),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="sign without asking (the cost is still shown)")] = False,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    who: Signer = FROM_OPTIONS,
    json_out: JsonOption = False,
) -> None:
    """Create a training job over providers' datasets, paying their prices plus the worker's fee into escrow."""
    import hashlib
    import tempfile

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from pydantic import ValidationError

    from enclave_worker.trusted import keywrap
    from enclave_worker.trusted.errors import InvalidModelSpec
    from enclave_worker.trusted.models import ModelSpec
    from marketplace.chain import Wei
    from marketplace.consumer import Consumer
    from marketplace.contracts import MarketClient, epsilon_units
    from marketplace.errors import SterlingError
    from marketplace.key_file import write_key_file
    from marketplace.remote_blobs import GatewayBlobStore

    try:
        ids = [int(part) for part in datasets.split(",") if part.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"{datasets!r} is not a list of dataset ids (e.g. 1,2)", param_hint="--datasets") from e
    if not ids:
        raise typer.BadParameter("name at least one dataset", param_hint="--datasets")
    try:
        spec = ModelSpec.from_bytes(spec_file.read_bytes())
        spec.training_epsilon(epsilon_units(epsilon))
    except OSError as e:
        raise typer.BadParameter(f"cannot read {spec_file}: {e.strerror}", param_hint="--spec") from e
    except (ValidationError, InvalidModelSpec, ValueError) as e:
        raise typer.BadParameter(f"{spec_file} is not a valid model spec: {e}", param_hint="--spec") from e
    http, config, chain = connect(gateway, timeout=120)
    try:
        signer = who.unlock(http)
        listed = [get_json(http, f"/api/datasets/{i}") for i in ids]
        spec_hash = hashlib.sha256(spec.to_bytes()).hexdigest()
        problems = eligibility(listed, epsilon=epsilon, delta=delta, consumer=signer.address, spec_hash=spec_hash)
        if problems:
            err.print("[red]the job would be refused:[/red]\n- " + "\n- ".join(problems))
            raise typer.Exit(1)
        token = config.get("payment_token")
        unit = token["symbol"] if token else "wei"
        total = sum(int(d["price_wei"]) for d in listed) + worker_fee
        table = Table("dataset", "provider", "price", "ε left", title=f"job over {len(ids)} dataset(s): ε {epsilon:g}, δ {delta:g}")
        for d in listed:
            table.add_row(f"#{d['id']}", d["provider"], f"{int(d['price_wei']):,} {unit}", f"{d['remaining_epsilon']:g}")
        table.add_row("worker fee", "", f"{worker_fee:,} {unit}", "")
        table.add_row("[bold]total[/bold]", "", f"[bold]{total:,} {unit}[/bold]", "")
        err.print(table)
        if not yes and not typer.confirm(f"Sign as {signer.address} and escrow {total:,} {unit}?", err=True):
            err.print("nothing was sent")
            raise typer.Exit(1)
        key = X25519PrivateKey.generate()
        public = keywrap.public_key_bytes(key)
        pending = write_key_file(key_dir / f"sterling-job-pending-{public.hex()[:16]}-key.json", key, job_id=None)
        market = MarketClient(chain, config["contracts"]["job_market"])
        with tempfile.TemporaryDirectory() as cache, GatewayBlobStore(gateway, Path(cache)) as blobs:
            consumer = Consumer(signer, market=market, blobs=blobs, key=key)
            try:
                created = consumer.create_job(
                    ids, spec, epsilon=epsilon, delta=delta, worker_fee=Wei(worker_fee), max_total_price=Wei(total)
                )
            except SterlingError as e:
                pending.unlink(missing_ok=True)  # no job was created: its key seals nothing
                raise refused(e) from e
    finally:
        http.close()
    key_file = key_dir / f"sterling-job-{created.job_id}-key.json"
    try:
        write_key_file(key_file, key, job_id=int(created.job_id))
        pending.unlink()
    except FileExistsError:
        key_file = pending  # an older file of that name stays; this key stays in the pending file
    summary = {
        "job_id": int(created.job_id),
        "escrow": str(int(created.escrow)),
        "transaction": created.tx.tx_hash,
        "key_file": str(key_file),
    }
    if json_out:
        console.print_json(json.dumps(summary))
    else:
        console.print(
            f"created job [bold]{created.job_id}[/bold] (escrow {int(created.escrow):,} {unit}, tx {created.tx.tx_hash}); "
            f"its model will be sealed to the key in {key_file}: keep that file"
        )


@job_app.command("ls")
def ls(
    consumer: Annotated[str | None, typer.Option("--consumer", help="only this consumer's jobs (an address)")] = None,
    status: Annotated[str | None, typer.Option("--status", help="open, claimed, completed, expired or cancelled")] = None,
    dataset: Annotated[int | None, typer.Option("--dataset", min=1, help="only jobs over this dataset")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    json_out: JsonOption = False,
) -> None:
    """List jobs, newest first."""
    http, _, _ = connect(gateway, timeout=60)
    try:
        page = get_json(http, "/api/jobs", consumer=consumer, status=status, dataset_id=dataset, limit=limit)
    finally:
        http.close()
    if json_out:
        console.print_json(json.dumps(page))
        return
    table = Table("job", "status", "datasets", "ε", "ε spent", "escrow", "consumer", title=f"{page['total']} job(s)")
    for j in page["items"]:
        spent = f"{j['epsilon_spent']:.3f}" if j["epsilon_spent"] is not None else "—"
        table.add_row(
            str(j["id"]), j["status"], ",".join(map(str, j["dataset_ids"])), f"{j['epsilon']:g}", spent, j["escrow_wei"], j["consumer"]
        )
    console.print(table)


@job_app.command("show")
def show(job_id: Annotated[int, typer.Argument(min=1)], gateway: GatewayOption = DEFAULT_GATEWAY, json_out: JsonOption = False) -> None:
    """One job: status, datasets and prices, privacy, timeline, progress."""
    http, _, _ = connect(gateway, timeout=60)
    try:
        job = get_json(http, f"/api/jobs/{job_id}")
    finally:
        http.close()
    if json_out:
        console.print_json(json.dumps(job))
        return
    console.print(f"[bold]job {job['id']}[/bold]: {job['status']}, consumer {job['consumer']}")
    prices = ", ".join(f"#{d} at {p}" for d, p in zip(job["dataset_ids"], job["prices_wei"], strict=True))
    console.print(f"datasets {prices}; escrow {job['escrow_wei']}")
    spent = f", spent {job['epsilon_spent']:.4f}" if job["epsilon_spent"] is not None else ""
    console.print(f"ε {job['epsilon']:g}, δ {job['delta']:g}{spent}")
    for event in job["timeline"]:
        console.print(f"  {event['stage']:<10} block {event['block']}")
    if job.get("progress"):
        p = job["progress"]
        console.print(f"progress: {p.get('stage')} epoch {p.get('epoch')}/{p.get('epochs')}, ε so far {p.get('epsilon_spent')}")


def _events(http: Any, stop_at: float) -> Any:
    """The names of the gateway's server-sent events as they come (until ``stop_at``, monotonic)."""
    import httpx

    try:
        with http.stream("GET", "/api/events", headers={"accept": "text/event-stream"}, timeout=httpx.Timeout(10, read=5)) as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    yield line.removeprefix("event:").strip()
                if time.monotonic() > stop_at:
                    return
    except httpx.ReadTimeout:
        return  # nothing for a while: the caller looks at the job again


INDEX_WAIT_SECONDS = 60.0
"""How long ``job watch`` waits for a job that is on-chain to reach the gateway's index."""


def _wait_indexed(http: Any, chain: Any, config: dict[str, Any], job_id: int, *, deadline: float) -> None:
    """Wait until the gateway's index has job ``job_id`` (just created, say), if the chain has it.

    Raises:
        typer.Exit: code 1 when the chain has no such job, or the index does not catch up in time.
    """
    from marketplace.contracts import MarketClient

    while http.get(f"/api/jobs/{job_id}").status_code == 404:
        if job_id > MarketClient(chain, config["contracts"]["job_market"]).job_count():
            err.print(f"[red]there is no job {job_id}[/red]")
            raise typer.Exit(1)
        if time.monotonic() > deadline:
            err.print(f"[red]job {job_id} is on-chain but the gateway has not indexed it yet[/red]")
            raise typer.Exit(1)
        time.sleep(0.5)


@job_app.command("watch")
def watch(
    job_id: Annotated[int, typer.Argument(min=1)],
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="give up after this many seconds")] = 3600,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    json_out: JsonOption = False,
) -> None:
    """Follow a job live (the gateway's events) until it settles: its stage, epochs and ε so far."""
    http, config, chain = connect(gateway, timeout=60)
    deadline = time.monotonic() + timeout
    try:
        _wait_indexed(http, chain, config, job_id, deadline=min(deadline, time.monotonic() + INDEX_WAIT_SECONDS))
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, disable=json_out
        ) as bar:
            task = bar.add_task(f"job {job_id}", total=None)
            while True:
                job = get_json(http, f"/api/jobs/{job_id}")
                progress = job.get("progress") or {}
                stage = job["status"] if job["status"] != "claimed" else progress.get("stage") or "claimed"
                epsilon_so_far = progress.get("epsilon_spent")
                bar.update(
                    task, total=progress.get("epochs"), completed=progress.get("epoch") or 0,
                    description=f"job {job_id}: {stage}" + (f", ε {epsilon_so_far:.3f}" if epsilon_so_far is not None else ""),
                )  # fmt: skip
                if job["status"] in SETTLED:
                    break
                if time.monotonic() > deadline:
                    err.print(f"[red]job {job_id} is still {job['status']} after {timeout:g} s[/red]")
                    raise typer.Exit(1)
                for _ in _events(http, min(deadline, time.monotonic() + 5)):
                    break  # something happened: look at the job again
    finally:
        http.close()
    if json_out:
        console.print_json(json.dumps({"job_id": job_id, "status": job["status"], "epsilon_spent": job["epsilon_spent"]}))
    else:
        spent = f", ε spent {job['epsilon_spent']:.4f}" if job["epsilon_spent"] is not None else ""
        console.print(f"job {job_id} {job['status']}{spent}")
    if job["status"] != "completed":
        raise typer.Exit(1)


@job_app.command("cancel")
@signing
def cancel(
    job_id: Annotated[int, typer.Argument(min=1)],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    who: Signer = FROM_OPTIONS,
) -> None:
    """Cancel a job no worker has claimed: its ε is released and the escrow credited back (`sterling account withdraw`)."""
    from marketplace.contracts import MarketClient
    from marketplace.errors import SterlingError

    http, config, chain = connect(gateway, timeout=120)
    try:
        signer = who.unlock(http)
        try:
            tx = MarketClient(chain, config["contracts"]["job_market"]).cancel_job(signer, job_id)
        except SterlingError as e:
            raise refused(e) from e
    finally:
        http.close()
    console.print(f"cancelled job {job_id} (tx {tx.tx_hash}); its escrow is credited back: `sterling account withdraw`")
