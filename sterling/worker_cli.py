"""``sterling worker``: a trainer worker as a process of its own (:mod:`sterling.worker_service`, docs/operations.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)

OPERATOR_KEY_ENV = "STERLING_WORKER_OPERATOR_KEY"


def worker(
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="STERLING_RPC_URL", help="the chain's JSON-RPC URL")],
    deployment: Annotated[Path, typer.Option("--deployment", help="the deployment record (deployment.json of `sterling up`)")],
    key_manager: Annotated[str, typer.Option("--key-manager", help="URL of the `sterling keymanager` service")],
    blobs: Annotated[str, typer.Option("--blobs", help="a gateway's URL (blobs over HTTP) or a shared blob folder")],
    state_dir: Annotated[Path, typer.Option("--state-dir", help="this worker's cursors, blob cache and job status")],
    platform_key: Annotated[
        Path, typer.Option("--platform-key", help="the simulated TEE platform's key (development only; sim-platform.pem)")
    ],
    key_file: Annotated[
        Path | None,
        typer.Option("--operator-key-file", help="a file holding the operator's hex private key (else STERLING_WORKER_OPERATOR_KEY)"),
    ] = None,
    stake: Annotated[float | None, typer.Option(help="keep the operator's stake at this many whole units (default 10 ETH)")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads of the trainer enclave")] = None,
    niceness: Annotated[
        int, typer.Option(min=0, max=19, help="run the trainer enclave at this niceness (on a machine shared with a gateway, say)")
    ] = 0,
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between polls of the chain")] = 1.0,
    health_port: Annotated[int | None, typer.Option(help="serve GET /health on this port (0: any free port)")] = None,
    wait_key_manager: Annotated[
        float, typer.Option("--wait-key-manager", min=0, help="seconds to keep asking a key manager that does not answer yet")
    ] = 0.0,
    status_dir: Annotated[
        Path | None,
        typer.Option(
            "--status-dir", help="write job progress here (default: <state-dir>/status; workers may share one; a gateway reads it)"
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each step")] = False,
) -> None:
    """Run a trainer enclave for an operator: claim and train the jobs it can serve until SIGTERM or Ctrl-C (docs/operations.md)."""
    import threading

    from marketplace.errors import SterlingError
    from sterling.standalone import ChainView, log_json, service_account, stop_on_signals
    from sterling.worker_service import WorkerOptions, run_worker

    log_json(verbose)
    stop = threading.Event()
    stop_on_signals(stop)
    options = WorkerOptions(
        key_manager_url=key_manager, blobs=blobs, state_dir=state_dir, sim_platform_key=platform_key, stake=stake,
        threads=threads, niceness=niceness, interval=interval, health_port=health_port, status_dir=status_dir,
        key_manager_wait=wait_key_manager,
    )  # fmt: skip
    try:
        operator = service_account("operator", os.environ.get(OPERATOR_KEY_ENV), key_file, variable=OPERATOR_KEY_ENV)
        run_worker(ChainView.connect(rpc_url, deployment), operator, options, stop=stop)
    except SterlingError as e:
        console.print(f"[red]{type(e).__name__}:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
