"""``sterling model``: a trained model's card, and the model itself, decrypted here and exported.

``model card JOB`` prints a completed job's model card (:mod:`marketplace.model_card`: inputs in
order with their standardisation, classes, datasets and providers, ε, δ, accountant, noise,
steps, receipt and transaction), built from the chain and the public documents its receipt
committed to. ``model fetch JOB --key-file KEY`` downloads the sealed model through the gateway,
decrypts it here with the consumer key the web UI saved when it created the job
(``sterling-job-N-key.json``), checks it against the receipt's model hash, and writes the weights
(safetensors), the card (Markdown and JSON) and, with ``--onnx``, an ONNX export that is run with
onnxruntime against torch on 1,000 rows (the consumer's own, with ``--rows``) before it is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from sterling.cli_common import DEFAULT_GATEWAY, GatewayOption, JsonOption, connect

model_app = typer.Typer(help="A trained model: its card, and the model decrypted here (safetensors, ONNX).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)
CHECK_ROWS = 1000
"""Rows the ONNX export is checked on against torch."""


def _market(chain: Any, config: dict[str, Any]) -> Any:
    from marketplace.contracts import MarketClient

    return MarketClient(chain, config["contracts"]["job_market"])


def _card(market: Any, blobs: Any, job_id: int) -> dict[str, Any]:
    from marketplace.errors import SterlingError
    from marketplace.model_card import build_card

    try:
        return build_card(market, blobs, job_id)
    except SterlingError as e:
        err.print(f"[red]no card for job {job_id}:[/red] {e}")
        raise typer.Exit(1) from e


@model_app.command("card")
def card(
    job_id: Annotated[int, typer.Argument(min=1, help="a completed job")],
    gateway: GatewayOption = DEFAULT_GATEWAY,
    json_out: JsonOption = False,
) -> None:
    """Print a completed job's model card (Markdown, or JSON with --json)."""
    import tempfile

    from marketplace.model_card import card_markdown
    from marketplace.remote_blobs import GatewayBlobStore

    http, config, chain = connect(gateway, timeout=60)
    try:
        with tempfile.TemporaryDirectory() as cache, GatewayBlobStore(gateway, Path(cache)) as blobs:
            document = _card(_market(chain, config), blobs, job_id)
    finally:
        http.close()
    if json_out:
        console.print_json(json.dumps(document))
    else:
        console.print(card_markdown(document), markup=False, highlight=False)


def _check_rows(rows_csv: Path | None, card: dict[str, Any]) -> Any:
    """The rows the ONNX export is checked on: the consumer's (``--rows``), else 1,000 drawn around
    the model's standardisation (each column's mean ± scale; standard normal where it has none)."""
    import numpy as np

    from sterling.serving_cli import _read_rows

    shape = tuple(int(d) for d in card["inputs"]["shape"][1:])
    width = int(np.prod(shape))
    if rows_csv is not None:
        rows = _read_rows(rows_csv)
        if rows.shape[1] != width:
            raise typer.BadParameter(f"{rows_csv} has {rows.shape[1]} columns; the model takes {width}", param_hint="--rows")
        return rows[:CHECK_ROWS].reshape(-1, *shape)
    columns = card["inputs"]["columns"]
    mean = np.array([c.get("mean", 0.0) for c in columns], dtype=np.float64)
    scale = np.array([c.get("scale", 1.0) for c in columns], dtype=np.float64)
    drawn = np.random.default_rng(0).normal(size=(CHECK_ROWS, width)) * scale + mean
    return drawn.astype(np.float32).reshape(-1, *shape)


def _write_new(path: Path, data: bytes, *, force: bool) -> None:
    from marketplace._files import write_atomic

    if path.exists() and not force:
        raise typer.BadParameter(f"{path} exists: choose another path or pass --force (nothing was written)")
    write_atomic(path, data)


@model_app.command("fetch")
def fetch(
    job_id: Annotated[int, typer.Argument(min=1, help="a completed job of yours")],
    key_file: Annotated[Path, typer.Option("--key-file", help="the consumer key file the web UI saved for the job")],
    out: Annotated[Path, typer.Option("--out", help="where to write the weights (safetensors)")] = Path("model.safetensors"),
    onnx: Annotated[Path | None, typer.Option("--onnx", help="also export to ONNX, checked against torch on 1,000 rows")] = None,
    card_out: Annotated[
        Path | None, typer.Option("--card", help="where to write the model card (Markdown; JSON beside it); default: beside --out")
    ] = None,
    rows: Annotated[Path | None, typer.Option("--rows", help="your own rows (CSV of numbers) to check the ONNX export on")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite files that exist")] = False,
    gateway: GatewayOption = DEFAULT_GATEWAY,
    json_out: JsonOption = False,
) -> None:
    """Download a completed job's sealed model, decrypt it here, check it against the receipt, and
    write the weights, the model card and (with --onnx) a checked ONNX export."""
    import tempfile

    from safetensors.torch import load as load_tensors

    from enclave_worker.trusted import keywrap
    from enclave_worker.trusted.models import ModelSpec, build_model
    from marketplace.consumer import open_job_model
    from marketplace.errors import SterlingError
    from marketplace.key_file import KeyFileInvalid, read_key_file
    from marketplace.model_card import card_markdown, schema_of_card
    from marketplace.portable import export_checked
    from marketplace.remote_blobs import DownloadProgress, GatewayBlobStore

    try:
        key = read_key_file(key_file, job_id=job_id)
    except KeyFileInvalid as e:
        raise typer.BadParameter(str(e), param_hint="--key-file") from e
    card_path = card_out or out.with_suffix(".card.md")
    targets = [out, card_path, card_path.with_suffix(".json"), *([onnx] if onnx else [])]
    clash = [str(p) for p in targets if p.exists()]
    if clash and not force:
        raise typer.BadParameter(f"{', '.join(clash)} exist(s): choose other paths or pass --force (nothing was written)")
    http, config, chain = connect(gateway, timeout=120)
    try:
        market = _market(chain, config)
        job = market.job(job_id)
        if job.consumer_key != keywrap.public_key_bytes(key):
            raise typer.BadParameter(f"{key_file} is not the key job {job_id}'s model is sealed to", param_hint="--key-file")
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err, transient=True) as bar:
            task = bar.add_task("downloading", total=None)

            def shown(p: DownloadProgress) -> None:
                bar.update(task, description=f"downloading {p.digest[:12]}…", completed=p.done, total=p.total)

            with tempfile.TemporaryDirectory() as cache, GatewayBlobStore(gateway, Path(cache), progress=shown) as blobs:
                try:
                    weights = open_job_model(market, blobs, key, job_id)
                except SterlingError as e:
                    err.print(f"[red]cannot open job {job_id}'s model:[/red] {e}")
                    raise typer.Exit(1) from e
                document = _card(market, blobs, job_id)
    finally:
        http.close()
    spec = ModelSpec.model_validate(document["model"]["spec"])
    schema = schema_of_card(document)
    model = build_model(spec, schema)
    model.load_state_dict(load_tensors(weights))
    exported = agreement = None
    if onnx is not None:
        with console.status("exporting to ONNX and checking it against torch"):
            try:
                exported, agreement = export_checked(model, schema, _check_rows(rows, document))
            except SterlingError as e:
                err.print(f"[red]{e}[/red]")
                raise typer.Exit(1) from e
    _write_new(out, weights, force=force)
    _write_new(card_path, card_markdown(document).encode(), force=force)
    _write_new(card_path.with_suffix(".json"), json.dumps(document, indent=2).encode(), force=force)
    if onnx is not None and exported is not None:
        _write_new(onnx, exported, force=force)
    summary = {
        "job_id": job_id, "weights": str(out), "model_hash": document["receipt"]["model_hash"], "card": str(card_path),
        "onnx": str(onnx) if onnx else None,
        "onnx_check": None if agreement is None else {
            "rows": agreement.rows, "labels_equal": agreement.labels_equal, "max_abs_diff": agreement.max_abs_diff,
            "rows_from": str(rows) if rows else "drawn around the model's standardisation",
        },
    }  # fmt: skip
    if json_out:
        console.print_json(json.dumps(summary))
        return
    console.print(f"wrote {out} ({len(weights):,} bytes; sha256 = the receipt's model hash) and its card {card_path}")
    if agreement is not None:
        console.print(
            f"wrote {onnx}: onnxruntime and torch agree on {agreement.labels_equal}/{agreement.rows} labels, "
            f"largest logit difference {agreement.max_abs_diff:.2g}"
        )
