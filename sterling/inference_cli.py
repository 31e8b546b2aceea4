"""``sterling inference``: an inference host as a process of its own (:mod:`sterling.inference_service`, docs/operations.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def inference(
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="STERLING_RPC_URL", help="the chain's JSON-RPC URL")],
    deployment: Annotated[Path, typer.Option("--deployment", help="the deployment record (deployment.json of `sterling up`)")],
    key_manager: Annotated[
        str, typer.Option("--key-manager", help="URL of the `sterling keymanager` service (its verifier, and its model keys)")
    ],
    blobs: Annotated[str, typer.Option("--blobs", help="a gateway's URL (blobs over HTTP) or a shared blob folder")],
    platform_key: Annotated[
        Path, typer.Option("--platform-key", help="the simulated TEE platform's key (development only; sim-platform.pem)")
    ],
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="this host's voucher ledger and blob cache; default: .sterling-inference"),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option("--operator-key-file", help="a file holding the operator's hex private key (else STERLING_INFERENCE_OPERATOR_KEY)"),
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads of the inference enclave (default: one per core)")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on; default: 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on; default: 8200")] = None,
    redeem_interval: Annotated[
        float | None,
        typer.Option(
            "--redeem-interval", min=0.05, help="seconds between redemptions of the vouchers served (and once on stop); default: 30"
        ),
    ] = None,
    wait_key_manager: Annotated[
        float | None, typer.Option("--wait-key-manager", min=0, help="seconds to keep asking a key manager that does not answer yet")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log each step and redemption")] = False,
) -> None:
    """Serve the model market from an inference enclave for an operator, over HTTP, until SIGTERM or Ctrl-C (docs/operations.md).

    Keys never go on the command line: the operator's comes from STERLING_INFERENCE_OPERATOR_KEY or a key file.
    """
    import threading

    from marketplace.errors import SterlingError
    from sterling.inference_service import get_settings, run_inference
    from sterling.standalone import ChainView, log_json, stop_on_signals

    log_json(verbose)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        settings = get_settings(
            key_manager=key_manager, blobs=blobs, platform_key=platform_key, state_dir=state_dir, operator_key_file=key_file,
            threads=threads, host=host, port=port, redeem_interval=redeem_interval, key_manager_wait=wait_key_manager,
        )  # fmt: skip
        settings.operator()  # a missing or malformed key stops here, before the chain is asked anything
        run_inference(ChainView.connect(rpc_url, deployment), settings, stop=stop)
    except SterlingError as e:
        console.print(f"[red]{type(e).__name__}:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
