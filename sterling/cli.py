"""The ``sterling`` command line (typer + rich); the only place that prints."""

from __future__ import annotations

import json
import logging
import math
import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sterling import (
    account_cli,
    competition_cli,
    dataset_cli,
    evaluator_cli,
    inference_cli,
    job_cli,
    keymanager_cli,
    model_cli,
    serving_cli,
    worker_cli,
)

if TYPE_CHECKING:
    from marketplace.config import SterlingSettings

app = typer.Typer(help="Sterling: a privacy-preserving data marketplace.", no_args_is_help=True, add_completion=False)
enclave_app = typer.Typer(help="Inspect the trusted enclave code.", no_args_is_help=True)
app.add_typer(enclave_app, name="enclave")
attest_app = typer.Typer(help="Verify attestation evidence offline (aws-nitro, or sim for development).", no_args_is_help=True)
app.add_typer(attest_app, name="attest")
privacy_app = typer.Typer(help="Privacy accounting (ε for DP-SGD, noise for a target ε) and empirical audits.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
app.add_typer(serving_cli.models_app, name="models")
app.add_typer(competition_cli.competition_app, name="competition")
app.add_typer(account_cli.account_app, name="account")
app.add_typer(model_cli.model_app, name="model")
app.add_typer(job_cli.job_app, name="job")
app.add_typer(dataset_cli.dataset_app, name="dataset")
app.command("infer")(serving_cli.infer)
app.command("keymanager")(keymanager_cli.keymanager)
app.command("worker")(worker_cli.worker)
app.command("evaluator")(evaluator_cli.evaluator)
app.command("inference")(inference_cli.inference)
console = Console()
ETHER = 10**18


def _eth(wei: int) -> str:
    return f"{wei / ETHER:.4f} ETH"


def _settings(**flags: Any) -> SterlingSettings:
    """The one configuration with the command's options as flags (``None``: not given, so the
    environment, then ``brownie-config.yaml``, then the defaults decide; docs/configuration.md)."""
    from marketplace.config import get_settings
    from marketplace.errors import ConfigError

    try:
        return get_settings(**flags)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from e


@app.command()
def demo(
    chain: Annotated[
        str | None,
        typer.Option(
            help="anvil (started and stopped by the command) or embedded (py-evm in process); default: the configured network (anvil)"
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json-out", help="also write the report as JSON here")] = None,
    seed: Annotated[
        int | None, typer.Option(help="seed of the data split and model initialisation; default: STERLING_DEMO_SEED, else 7")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each step")] = False,
    scenario: Annotated[
        str, typer.Option("--scenario", help="training (three hospitals, one DP job) or competition (sealed test set, sealed models)")
    ] = "training",
) -> None:
    """Run a scenario end to end: the three-hospital private training (default), or a competition."""
    from marketplace.errors import ConfigError
    from sterling.demo import demo_network, run_demo

    if scenario not in ("training", "competition"):
        raise typer.BadParameter("choose training or competition", param_hint="--scenario")

    settings = _settings(network=chain, demo={"seed": seed})
    try:
        demo_network(settings)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from e
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("setting up", total=None, detail="")

        def on_progress(event: dict[str, Any]) -> None:
            if event.get("stage") == "training":
                bar.update(task, description="training (DP-SGD in enclave)", total=event["epochs"], completed=event["epoch"],
                           detail=f"epoch {event['epoch']}/{event['epochs']}, ε spent {event['epsilon']:.3f}")
            else:
                bar.update(task, description=str(event.get("stage")), detail=str(event.get("detail", "")))
                bar.console.log(f"{event.get('stage')}: {event.get('detail', '')}")

        if scenario == "competition":
            from sterling.competition_demo import run_competition_demo

            report: Any = run_competition_demo(settings, progress=on_progress)
        else:
            report = run_demo(settings, progress=on_progress)
    if scenario == "competition":
        _print_competition_report(report.to_json())
    else:
        _print_report(report.to_json())
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        console.print(f"report written to {json_out}")


def _print_competition_report(r: dict[str, Any]) -> None:
    summary = Table(title=f"Sterling demo — competition {r['competition_id']} on {r['chain']}", show_header=False)
    summary.add_row("Private test rows (public split)", f"{r['test_rows']} ({r['public_rows']})")
    summary.add_row("Winner / prize", f"{r['winner']} / {_eth(r['prize_wei'])}")
    summary.add_row("Copied ciphertext at the key manager", r["copy_attempt"]["key_manager"])
    summary.add_row("Copied admission on-chain", r["copy_attempt"]["chain"])
    purchase = r["purchase"]
    summary.add_row("Bought model: weights match / test accuracy", f"{purchase['weights_match']} / {purchase['test_accuracy']:.2%}")
    summary.add_row("Scoring in the enclave", f"{r['scoring']['rows_per_second']:,.0f} rows/s over {r['scoring']['scorings']} scorings")
    summary.add_row("Evaluator measurement", r["evaluator_measurement"])
    summary.add_row("Wall time", f"{r['wall_seconds']:.1f} s")
    console.print(summary)
    board = Table(title="Leaderboard (public: the Ladder's value when scored, η = 0.01)")
    for col in ("entry", "participant", "model", "public", "private", "ask"):
        board.add_column(col)
    for e in r["leaderboard"]:
        scores = f"{e['public_score']:.2f}", f"{e['private_score']:.4f}"
        board.add_row(str(e["entry"]), e["participant"], e["architecture"], *scores, _eth(e["ask_wei"]))
    console.print(board)
    gas = Table(title="Gas per transaction")
    gas.add_column("transaction")
    gas.add_column("gas", justify="right")
    for name, used in r["gas"].items():
        gas.add_row(name, f"{used:,}")
    console.print(gas)


def _print_report(r: dict[str, Any]) -> None:
    summary = Table(title=f"Sterling demo — job {r['job_id']} on {r['chain']}", show_header=False)
    summary.add_row("DP model accuracy (consumer's validation set)", f"{r['dp_accuracy']:.2%}")
    summary.add_row("Non-private baseline accuracy (same data, in the clear)", f"{r['baseline_accuracy']:.2%}")
    summary.add_row("ε target / ε spent (δ)", f"{r['epsilon_target']:.3f} / {r['epsilon_spent']:.6f} ({r['delta']:g})")
    summary.add_row("Enclave measurement", r["measurement"])
    summary.add_row("Attestation format", f"{r['attestation_format']} (development only)")
    summary.add_row("Wall time", f"{r['wall_seconds']:.1f} s")
    console.print(summary)

    datasets = Table(title="Datasets: privacy budget and payments")
    for col in ("dataset", "provider", "rows", "ε remaining", "paid"):
        datasets.add_column(col)
    paid = {p["dataset_id"]: p["amount"] for p in r["payments_wei"]["providers"]}
    for d in r["datasets"]:
        remaining = r["budget_remaining"][str(d["dataset_id"])]
        datasets.add_row(str(d["dataset_id"]), d["provider"], str(d["rows"]), f"{remaining:.6f}", _eth(paid[d["dataset_id"]]))
    datasets.add_row("", "worker fee", "", "", _eth(r["payments_wei"]["worker"]))
    datasets.add_row("", "consumer refund", "", "", _eth(r["payments_wei"]["consumer_refund"]))
    console.print(datasets)

    gas = Table(title="Gas per transaction")
    gas.add_column("transaction")
    gas.add_column("gas", justify="right")
    for name, used in r["gas"].items():
        gas.add_row(name, f"{used:,}")
    console.print(gas)


_RPC_URL = Annotated[str, typer.Option("--rpc-url", envvar="STERLING_RPC_URL", help="the chain's JSON-RPC URL")]
_DEPLOYMENT = Annotated[
    Path, typer.Option("--deployment", help="the deployment record (deployment.json in the state folder of `sterling up`)")
]
_DATABASE = Annotated[
    str, typer.Option("--database-url", envvar="STERLING_DATABASE_URL", help="SQLAlchemy URL of the shared chain index")
]


@app.command()
def indexer(
    rpc_url: _RPC_URL,
    deployment: _DEPLOYMENT,
    database_url: _DATABASE,
    confirmations: Annotated[int, typer.Option(min=0, help="stay this many blocks behind the head")] = 0,
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between polls")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="index up to the head once, print what was indexed, exit")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each range")] = False,
) -> None:
    """Follow the chain into the shared index database until SIGTERM or Ctrl-C (a service of its own; docs/operations.md)."""
    import threading

    from marketplace.errors import SterlingError
    from sterling.standalone import ChainView, log_json, run_indexer, stop_on_signals

    log_json(verbose)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        ranges = run_indexer(
            ChainView.connect(rpc_url, deployment), database_url, confirmations=confirmations, interval=interval, stop=stop, once=once
        )
    except SterlingError as e:
        console.print(f"[red]{type(e).__name__}:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
    if once:
        last = ranges[-1].to_block if ranges else None
        print(json.dumps({"ranges": len(ranges), "events": sum(r.events for r in ranges), "last_block": last}))


@app.command()
def gateway(
    rpc_url: _RPC_URL,
    deployment: _DEPLOYMENT,
    database_url: _DATABASE,
    blobs: Annotated[Path, typer.Option("--blobs", help="the blob folder (shared, or this machine's copy)")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    key_manager: Annotated[
        str | None,
        typer.Option(
            "--key-manager",
            help="URL of the `sterling keymanager` service deposits go to (and models' and competitions' keys, when it serves them)",
        ),
    ] = None,
    status_dir: Annotated[
        Path | None, typer.Option("--status-dir", help="the job status board the workers write (their --status-dir): the live timeline")
    ] = None,
    dev_accounts_file: Annotated[
        Path | None,
        typer.Option(
            "--dev-accounts-file",
            help="a JSON list of development accounts' hex keys the UI offers on a local chain (mode 0600; `sterling up` writes it)",
        ),
    ] = None,
    attestation_format: Annotated[
        list[str] | None,
        typer.Option("--attestation-format", help="VERIFIER=FORMAT: the evidence format a verifier checks (sim, aws-nitro); repeatable"),
    ] = None,
    inference: Annotated[
        str | None, typer.Option("--inference", help="URL of the `sterling inference` service POST /api/inference is relayed to")
    ] = None,
    serve_models: Annotated[
        bool,
        typer.Option(
            "--serve-models",
            help="host an inference enclave in this process (no hop to a `sterling inference`): its settings as that "
            "command's, from STERLING_INFERENCE_* (operator key, platform key, state folder), its key manager --key-manager",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log requests' failures and the service's steps")] = False,
) -> None:
    """Serve the API and the UI from the shared index (another process runs `sterling indexer`) until SIGTERM or Ctrl-C."""
    import threading

    from marketplace.errors import SterlingError
    from sterling.standalone import ChainView, log_json, read_dev_accounts, run_gateway, stop_on_signals

    log_json(verbose)
    stop = threading.Event()
    stop_on_signals(stop)
    formats: dict[str, str] = {}
    for pair in attestation_format or []:
        verifier, _, evidence = pair.partition("=")
        if not verifier.startswith("0x") or len(verifier) != 42 or not evidence:
            raise typer.BadParameter(
                f"{pair!r} is not VERIFIER=FORMAT (an address, then sim or aws-nitro)", param_hint="--attestation-format"
            )
        formats[verifier] = evidence
    if serve_models and (inference is not None or key_manager is None):
        raise typer.BadParameter("give --key-manager (the models' keys), and not --inference too", param_hint="--serve-models")
    try:
        view = ChainView.connect(rpc_url, deployment)
        accounts = read_dev_accounts(dev_accounts_file) if dev_accounts_file is not None else ()
        models = None
        if serve_models:
            from sterling.inference_service import get_settings as inference_settings

            models = inference_settings(key_manager=key_manager, blobs=str(blobs))
            models.operator()  # a missing or malformed key stops here
        run_gateway(
            view, database_url, blobs, host=host, port=port, stop=stop, key_manager_url=key_manager, status_dir=status_dir,
            dev_accounts=accounts, attestation_formats=formats, inference_url=inference, serve_models=models,
        )  # fmt: skip
    except SterlingError as e:
        console.print(f"[red]{type(e).__name__}:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e


@app.command()
def up(
    chain: Annotated[
        str | None,
        typer.Option(
            help="anvil (state kept in --state-dir), embedded (py-evm in process, nothing kept) or a network of "
            "brownie-config.yaml; default: the configured network (anvil)"
        ),
    ] = None,
    rpc_url: Annotated[str | None, typer.Option("--rpc-url", help="use the JSON-RPC node at this URL instead of starting a chain")] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="chain state, keys, deployment, index, blobs; default: .sterling")
    ] = None,
    host: Annotated[str | None, typer.Option(help="address the gateway listens on; default: 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="port the gateway listens on; default: 8000")] = None,
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="SQLAlchemy URL of the chain index (default: SQLite in --state-dir)")
    ] = None,
    payment_token: Annotated[
        str | None,
        typer.Option(
            "--payment-token",
            help="a market paid in this ERC-20 (an address), or `test` to deploy a test stablecoin and mint it to the development "
            "accounts; default: the native currency",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each step")] = False,
) -> None:
    """Start the chain, contracts, oracle, key manager, workers, indexer and gateway; print the URL; Ctrl-C stops all.

    On a node (anvil or --rpc-url) every service (key manager, workers, indexer, inference,
    evaluator, gateway) runs as a child process, logging to <state-dir>/services/*.log
    (docs/operations.md). Options override STERLING_* environment
    variables, which override brownie-config.yaml (docs/configuration.md).
    """
    from marketplace.errors import SterlingError
    from sterling.up import run_up

    settings = _settings(
        network=chain, rpc_url=rpc_url, state_dir=state_dir, database_url=database_url, gateway={"host": host, "port": port},
        up={"payment_token": payment_token},
    )
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def on_ready(url: str) -> None:
        console.print(f"[bold green]Sterling is up:[/bold green] {url}  (API docs {url}/docs, Ctrl-C stops)", highlight=False)

    with console.status("starting Sterling…") as status:

        def say(stage: str, detail: str) -> None:
            status.update(f"{stage}: {detail}")
            console.print(f"  {stage}: {detail}", highlight=False)

        started = [False]

        def ready(url: str) -> None:
            started[0] = True
            status.stop()
            on_ready(url)

        try:
            run_up(settings, on_ready=ready, say=say)
        except KeyboardInterrupt:
            pass
        except SterlingError as e:
            status.stop()
            console.print(f"[red]{'Sterling stopped' if started[0] else 'cannot start Sterling'}:[/red] {e}", highlight=False)
            raise typer.Exit(1) from e
    console.print("Sterling stopped." if started[0] else "Sterling did not start.")


@enclave_app.command("measure")
def enclave_measure() -> None:
    """Print the measurement of the trusted code and pinned dependencies in this checkout."""
    from enclave_worker.measurement import dependency_versions, measure, trusted_files

    console.print(f"measurement: 0x{measure().hex()}")
    console.print(f"files: {len(trusted_files())}; dependencies: " + ", ".join(f"{k}=={v}" for k, v in dependency_versions().items()))


@attest_app.command("verify")
def attest_verify(
    file: Annotated[Path, typer.Argument(help="the evidence: raw bytes (COSE_Sign1 for aws-nitro) or base64", exists=True, dir_okay=False)],
    format: Annotated[str, typer.Option("--format", help="aws-nitro or sim (development only)")] = "aws-nitro",
    at: Annotated[float | None, typer.Option("--at", help="verification time T, Unix seconds (default: now)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    allow_debug: Annotated[bool, typer.Option("--allow-debug", help="accept debug-mode Nitro enclaves (all-zero PCR0-2)")] = False,
    expect_pcr0: Annotated[str | None, typer.Option("--expect-pcr0", help="required PCR0 (hex)")] = None,
    expect_pcr1: Annotated[str | None, typer.Option("--expect-pcr1", help="required PCR1 (hex)")] = None,
    expect_pcr2: Annotated[str | None, typer.Option("--expect-pcr2", help="required PCR2 (hex)")] = None,
    expect_pcr: Annotated[list[str] | None, typer.Option("--expect-pcr", help="required PCR as INDEX=HEX (repeatable)")] = None,
    max_age: Annotated[int | None, typer.Option("--max-age", help="refuse evidence older than this many seconds at T")] = None,
    platform_key: Annotated[
        Path | None, typer.Option("--platform-key", help="sim only: the platform's Ed25519 key (PEM, raw 32 bytes or hex)")
    ] = None,
) -> None:
    """Verify attestation evidence at time T and print what it attests.

    Exit status 0 if valid; otherwise 1 and one line ``invalid: <reason>`` on stderr.
    """
    from marketplace.errors import AttestationRejected
    from oracle.attestation import ATTESTATION_FORMATS, NitroPolicy, verify_evidence

    if format not in ATTESTATION_FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(ATTESTATION_FORMATS)}", param_hint="--format")
    expected = _expected_pcrs({0: expect_pcr0, 1: expect_pcr1, 2: expect_pcr2}, expect_pcr or [])
    key = None
    if format == "sim":
        if platform_key is None:
            raise typer.BadParameter("sim evidence needs the platform's public key", param_hint="--platform-key")
        key = _load_platform_key(platform_key)
    policy = NitroPolicy(allow_debug=allow_debug, expected_pcrs=expected or None, max_age_seconds=max_age)
    try:
        verified = verify_evidence(_read_evidence(file), format=format, at=at, policy=policy, platform_public_key=key)
    except AttestationRejected as e:
        reason = " ".join(str(e).split())
        if json_output:
            typer.echo(json.dumps({"valid": False, "reason": reason}))
        typer.echo(f"invalid: {reason}", err=True)
        raise typer.Exit(1) from e

    result: dict[str, Any] = {
        "valid": True,
        "format": verified.format,
        "module_id": verified.module_id,
        "measurement": verified.measurement.hex(),
        "pcrs": {str(i): v.hex() for i, v in sorted(verified.pcrs.items()) if any(v)},
        "public_key": verified.bound_key.hex() if verified.bound_key is not None else None,
        "user_data": verified.user_data.hex() if verified.user_data is not None else None,
        "nonce": verified.nonce.hex() if verified.nonce is not None else None,
        "timestamp_ms": verified.timestamp,
    }
    if json_output:
        typer.echo(json.dumps(result, indent=1))
        return
    out = console if console.is_terminal else Console(width=200)  # keep long hex values on one line when piped
    title = f"VALID {verified.format} evidence" + (" (development only)" if verified.format == "sim" else "")
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("module_id", str(verified.module_id or "—"))
    table.add_row("timestamp", f"{verified.timestamp} ms ({_utc(verified.timestamp)})")
    table.add_row("measurement", result["measurement"])
    for index, value in result["pcrs"].items():
        table.add_row(f"PCR{index}", value)
    zero = sorted(i for i, v in verified.pcrs.items() if not any(v))
    if zero:
        table.add_row("zero PCRs", ", ".join(map(str, zero)))
    for name in ("public_key", "user_data", "nonce"):
        table.add_row(name, result[name] or "—")
    out.print(table)


def _expected_pcrs(named: dict[int, str | None], pairs: list[str]) -> dict[int, bytes]:
    """``--expect-pcrN HEX`` and ``--expect-pcr N=HEX`` as a PCR map."""
    entries = [(str(i), v) for i, v in named.items() if v is not None]
    for pair in pairs:
        index, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"{pair!r} is not INDEX=HEX", param_hint="--expect-pcr")
        entries.append((index, value))
    expected: dict[int, bytes] = {}
    for index, value in entries:
        try:
            expected[int(index)] = bytes.fromhex(value.removeprefix("0x"))
        except ValueError as e:
            raise typer.BadParameter(f"PCR{index}: {value!r} is not hex", param_hint="--expect-pcr") from e
    return expected


def _read_evidence(path: Path) -> bytes:
    """The file's bytes, base64-decoded if the file is base64 text (binary CBOR never is)."""
    import base64
    import binascii
    import string

    data = path.read_bytes()
    text = data.strip()
    if text and all(chr(b) in string.ascii_letters + string.digits + "+/=\n\r" for b in text):
        try:
            return base64.b64decode(text, validate=False)
        except binascii.Error:
            return data
    return data


def _load_platform_key(path: Path) -> Any:
    """The sim platform's Ed25519 public key from a PEM (public or private), raw 32 bytes, or hex."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    data = path.read_bytes()
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            if b"PRIVATE KEY" in data:
                private = serialization.load_pem_private_key(data, password=None)
                if isinstance(private, Ed25519PrivateKey):
                    return private.public_key()
            else:
                public = serialization.load_pem_public_key(data)
                if isinstance(public, Ed25519PublicKey):
                    return public
            raise ValueError("not an Ed25519 key")
        raw = data if len(data) == 32 else bytes.fromhex(data.decode().strip().removeprefix("0x"))
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise typer.BadParameter(f"{path} is not an Ed25519 platform key: {e}", param_hint="--platform-key") from e


def _utc(timestamp_ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class Accountant(str, Enum):  # noqa: UP042 -- typer shows choices through str(); StrEnum would change nothing but the rule
    """The accountants of :mod:`enclave_worker.trusted.accounting`."""

    rdp = "rdp"
    prv = "prv"


SampleRateOption = Annotated[float, typer.Option("--sample-rate", "-q", help="Poisson sampling rate q = batch size / rows, in (0, 1]")]
StepsOption = Annotated[int | None, typer.Option("--steps", help="number of DP-SGD steps T (or give --epochs)")]
EpochsOption = Annotated[float | None, typer.Option("--epochs", help="epochs E; steps = ceil(E / q) (or give --steps)")]
DeltaOption = Annotated[float, typer.Option("--delta", help="δ, in (0, 1)")]
AccountantOption = Annotated[Accountant, typer.Option("--accountant", help="rdp (Rényi DP) or prv (privacy random variables, tighter)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the result as JSON")]


def _check_accounting_inputs(sample_rate: float, delta: float) -> None:
    if not 0 < sample_rate <= 1:
        raise typer.BadParameter(f"must be in (0, 1], got {sample_rate}", param_hint="--sample-rate")
    if not 0 < delta < 1:
        raise typer.BadParameter(f"must be in (0, 1), got {delta}", param_hint="--delta")


def _steps(steps: int | None, epochs: float | None, sample_rate: float) -> int:
    """Steps from ``--steps`` or from ``--epochs`` (``ceil(E / q)``, as TF Privacy's epochs / batch-size interface)."""
    if (steps is None) == (epochs is None):
        raise typer.BadParameter("give exactly one of --steps and --epochs", param_hint="--steps / --epochs")
    if steps is not None:
        if steps < 0:
            raise typer.BadParameter(f"must be non-negative, got {steps}", param_hint="--steps")
        return steps
    assert epochs is not None
    if not epochs >= 0 or not math.isfinite(epochs):
        raise typer.BadParameter(f"must be non-negative and finite, got {epochs}", param_hint="--epochs")
    return math.ceil(round(epochs / sample_rate, 9))  # round first: 15 / 0.0025 is 6000.000000000001 in floats


@privacy_app.command("epsilon")
def privacy_epsilon(
    sample_rate: SampleRateOption,
    noise_multiplier: Annotated[float, typer.Option("--noise-multiplier", "-s", help="noise multiplier σ (> 0)")],
    delta: DeltaOption,
    steps: StepsOption = None,
    epochs: EpochsOption = None,
    accountant: AccountantOption = Accountant.rdp,
    json_output: JsonOption = False,
) -> None:
    """ε of T Poisson-sampled DP-SGD steps at rate q and noise multiplier σ, for a given δ.

    Example: sterling privacy epsilon -q 0.0025 -s 1.3 --epochs 15 --delta 1e-5
    """
    from enclave_worker.trusted import accounting

    _check_accounting_inputs(sample_rate, delta)
    if not noise_multiplier > 0 or not math.isfinite(noise_multiplier):
        raise typer.BadParameter(f"must be positive and finite, got {noise_multiplier}", param_hint="--noise-multiplier")
    count = _steps(steps, epochs, sample_rate)
    try:
        eps = accounting.epsilon(
            sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=count, delta=delta, accountant=accountant.value
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    if json_output:
        typer.echo(json.dumps({"epsilon": eps}))
        return
    table = Table(title=f"DP-SGD privacy ({accountant.value} accountant)", show_header=False)
    table.add_row("sample rate q", f"{sample_rate:g}")
    table.add_row("noise multiplier σ", f"{noise_multiplier:g}")
    table.add_row("steps T", f"{count:,}" + (f" ({epochs:g} epochs)" if epochs is not None else ""))
    table.add_row("δ", f"{delta:g}")
    table.add_row("ε", f"[bold]{eps:.6g}[/bold]")
    console.print(table)


@privacy_app.command("noise")
def privacy_noise(
    target_epsilon: Annotated[float, typer.Option("--target-epsilon", "-e", help="target ε (> 0)")],
    sample_rate: SampleRateOption,
    delta: DeltaOption,
    steps: StepsOption = None,
    epochs: EpochsOption = None,
    accountant: AccountantOption = Accountant.rdp,
    json_output: JsonOption = False,
) -> None:
    """The smallest noise multiplier σ (to 0.005 in ε) keeping T steps at rate q within (ε, δ).

    Example: sterling privacy noise -e 8 -q 0.04 --epochs 90 --delta 1e-5
    """
    from enclave_worker.trusted import accounting

    _check_accounting_inputs(sample_rate, delta)
    if not target_epsilon > 0 or not math.isfinite(target_epsilon):
        raise typer.BadParameter(f"must be positive and finite, got {target_epsilon}", param_hint="--target-epsilon")
    count = _steps(steps, epochs, sample_rate)
    if count < 1:
        raise typer.BadParameter("need at least one step", param_hint="--steps / --epochs")
    try:
        with warnings.catch_warnings():  # the search probes extreme σ, where Opacus notes the order grid's edge
            warnings.filterwarnings("ignore", message="Optimal order is the")
            sigma = accounting.noise_multiplier(
                target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=count, accountant=accountant.value
            )
    except ValueError as e:
        raise typer.BadParameter(" ".join(str(e).split()), param_hint="--target-epsilon") from e
    if json_output:
        typer.echo(json.dumps({"noise_multiplier": sigma}))
        return
    table = Table(title=f"Noise for a target ε ({accountant.value} accountant)", show_header=False)
    table.add_row("target ε", f"{target_epsilon:g}")
    table.add_row("sample rate q", f"{sample_rate:g}")
    table.add_row("steps T", f"{count:,}" + (f" ({epochs:g} epochs)" if epochs is not None else ""))
    table.add_row("δ", f"{delta:g}")
    table.add_row("noise multiplier σ", f"[bold]{sigma:.6g}[/bold]")
    console.print(table)


AUDIT_JSON_KEYS = ("epsilon_lower_bound", "confidence", "canaries", "guesses", "correct", "epsilon_target", "delta")


@privacy_app.command("audit")
def privacy_audit(
    epsilon: Annotated[float | None, typer.Option("--epsilon", help="train with DP-SGD at this ε (or give --non-private)")] = None,
    non_private: Annotated[bool, typer.Option("--non-private", help="audit the non-private baseline instead")] = False,
    delta: Annotated[float, typer.Option("--delta", help="δ of the training and of the audited claim")] = 1e-5,
    canaries: Annotated[int, typer.Option("--canaries", "-m", help="number of canaries, each included with probability 1/2")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="seed of the canaries, their inclusion and the training")] = 0,
    confidence: Annotated[float, typer.Option("--confidence", help="confidence of the lower bound")] = 0.95,
    guess_included: Annotated[
        int | None, typer.Option("--guess-included", help="k+: guess 'included' for this many top scores (default 0)")
    ] = None,
    guess_excluded: Annotated[
        int | None, typer.Option("--guess-excluded", help="k-: guess 'excluded' for this many bottom scores (default m/4)")
    ] = None,
    canary_kind: Annotated[
        str, typer.Option("--canary-kind", help="mislabelled: near-copies of data rows; random: Gaussian inputs, as in-job audits use")
    ] = "mislabelled",
    json_output: JsonOption = False,
) -> None:
    """Empirical ε lower bound from one training run on breast cancer + canaries (Steinke, Nasr & Jagielski 2023).

    Example: sterling privacy audit --epsilon 2 --seed 1
    """
    from marketplace.datasets import breast_cancer
    from marketplace.local_training import run_audit

    if (epsilon is None) == (not non_private):
        raise typer.BadParameter("give exactly one of --epsilon and --non-private", param_hint="--epsilon / --non-private")
    if epsilon is not None and (not epsilon > 0 or not math.isfinite(epsilon)):
        raise typer.BadParameter(f"must be positive and finite, got {epsilon}", param_hint="--epsilon")
    if not 0 < delta < 1:
        raise typer.BadParameter(f"must be in (0, 1), got {delta}", param_hint="--delta")
    if canaries < 1:
        raise typer.BadParameter(f"need at least one canary, got {canaries}", param_hint="--canaries")
    if not 0 < confidence < 1:
        raise typer.BadParameter(f"must be in (0, 1), got {confidence}", param_hint="--confidence")
    if seed < 0:
        raise typer.BadParameter(f"must be non-negative, got {seed}", param_hint="--seed")
    if canary_kind not in ("mislabelled", "random"):
        raise typer.BadParameter(f"must be mislabelled or random, got {canary_kind!r}", param_hint="--canary-kind")
    # train_dp warns on every run that noise comes from torch's generator (see docs/privacy.md).
    logging.getLogger("enclave_worker").setLevel(logging.ERROR)
    try:
        result = run_audit(
            breast_cancer(), epsilon=epsilon, delta=delta, canaries=canaries, seed=seed, confidence=confidence,
            guess_included=guess_included, guess_excluded=guess_excluded, canary_kind=canary_kind,  # type: ignore[arg-type]
        )
    except ValueError as e:
        raise typer.BadParameter(" ".join(str(e).split())) from e
    doc = result.to_json()
    if json_output:
        typer.echo(json.dumps({key: doc[key] for key in AUDIT_JSON_KEYS}))
        return
    target = "non-private training" if result.epsilon_target is None else f"DP-SGD at ε = {result.epsilon_target:g}, δ = {result.delta:g}"
    console.print(
        f"empirical ε lower bound: [bold]{result.epsilon_lower_bound:.3f}[/bold] at {result.confidence:.0%} confidence "
        f"({result.correct} of {result.guesses} guesses correct, {result.canaries} canaries; {target})"
    )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
