"""The ``sterling`` command line (typer + rich); the only place that prints."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(help="Sterling: a privacy-preserving data marketplace.", no_args_is_help=True, add_completion=False)
enclave_app = typer.Typer(help="Inspect the trusted enclave code.", no_args_is_help=True)
app.add_typer(enclave_app, name="enclave")
console = Console()
ETHER = 10**18


def _eth(wei: int) -> str:
    return f"{wei / ETHER:.4f} ETH"


@app.command()
def demo(
    chain: Annotated[str, typer.Option(help="anvil (started and stopped by the command) or embedded (py-evm in process)")] = "anvil",
    json_out: Annotated[Path | None, typer.Option("--json-out", help="also write the report as JSON here")] = None,
    seed: Annotated[int, typer.Option(help="seed of the data split and model initialisation")] = 7,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each step")] = False,
) -> None:
    """Run the three-hospital private-training scenario end to end."""
    from .demo import DemoConfig, run_demo

    if chain not in ("anvil", "embedded"):
        raise typer.BadParameter("--chain must be anvil or embedded")
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

        report = run_demo(DemoConfig(chain=chain, seed=seed), progress=on_progress)  # type: ignore[arg-type]
    _print_report(report.to_json())
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        console.print(f"report written to {json_out}")


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
        datasets.add_row(str(d["dataset_id"]), d["provider"], str(d["rows"]), f"{r['budget_remaining'][str(d['dataset_id'])]:.6f}", _eth(paid[d["dataset_id"]]))
    datasets.add_row("", "worker fee", "", "", _eth(r["payments_wei"]["worker"]))
    datasets.add_row("", "consumer refund", "", "", _eth(r["payments_wei"]["consumer_refund"]))
    console.print(datasets)

    gas = Table(title="Gas per transaction")
    gas.add_column("transaction")
    gas.add_column("gas", justify="right")
    for name, used in r["gas"].items():
        gas.add_row(name, f"{used:,}")
    console.print(gas)


@enclave_app.command("measure")
def enclave_measure() -> None:
    """Print the measurement of the trusted code and pinned dependencies in this checkout."""
    from enclave_worker.measurement import dependency_versions, measure, trusted_files

    console.print(f"measurement: 0x{measure().hex()}")
    console.print(f"files: {len(trusted_files())}; dependencies: " + ", ".join(f"{k}=={v}" for k, v in dependency_versions().items()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
