"""``sterling evaluator``: a competition evaluator as a process of its own (:mod:`sterling.evaluator_service`, docs/operations.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)

OPERATOR_KEY_ENV = "STERLING_EVALUATOR_OPERATOR_KEY"


def evaluator(
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="STERLING_RPC_URL", help="the chain's JSON-RPC URL")],
    deployment: Annotated[Path, typer.Option("--deployment", help="the deployment record (deployment.json of `sterling up`)")],
    key_manager: Annotated[
        str,
        typer.Option(
            "--key-manager", help="URL of the `sterling keymanager` service (its verifier certifies the enclave; it releases the keys)"
        ),
    ],
    blobs: Annotated[str, typer.Option("--blobs", help="a gateway's URL (blobs over HTTP) or a shared blob folder")],
    state_dir: Annotated[Path, typer.Option("--state-dir", help="this evaluator's blob cache")],
    platform_key: Annotated[
        Path, typer.Option("--platform-key", help="the simulated TEE platform's key (development only; sim-platform.pem)")
    ],
    key_file: Annotated[
        Path | None,
        typer.Option("--operator-key-file", help=f"a file holding the operator's hex private key (else {OPERATOR_KEY_ENV})"),
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads of the evaluator enclave")] = None,
    interval: Annotated[float, typer.Option(min=0.05, help="seconds between rounds of scoring what is due")] = 2.0,
    health_port: Annotated[int | None, typer.Option(help="serve GET /health on this port (0: any free port)")] = None,
    wait_key_manager: Annotated[
        float, typer.Option("--wait-key-manager", min=0, help="seconds to keep asking a key manager that does not answer yet")
    ] = 0.0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each step")] = False,
) -> None:
    """Run an evaluator enclave for an operator: score the competitions' submissions until SIGTERM or Ctrl-C (docs/operations.md)."""
    import threading

    from marketplace.errors import SterlingError
    from sterling.evaluator_service import EvaluatorOptions, run_evaluator
    from sterling.standalone import ChainView, log_json, service_account, stop_on_signals

    log_json(verbose)
    stop = threading.Event()
    stop_on_signals(stop)
    options = EvaluatorOptions(
        key_manager_url=key_manager, blobs=blobs, state_dir=state_dir, sim_platform_key=platform_key, threads=threads,
        interval=interval, health_port=health_port, key_manager_wait=wait_key_manager,
    )  # fmt: skip
    try:
        operator = service_account("operator", os.environ.get(OPERATOR_KEY_ENV), key_file, variable=OPERATOR_KEY_ENV)
        run_evaluator(ChainView.connect(rpc_url, deployment), operator, options, stop=stop)
    except SterlingError as e:
        console.print(f"[red]{type(e).__name__}:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
