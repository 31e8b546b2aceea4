"""``sterling keymanager``: the key manager and the attestation verifier as a service of their own
(:mod:`sterling.keymanager_service`; docs/operations.md, "sterling keymanager")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True)


def keymanager(
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="STERLING_RPC_URL", help="the chain's JSON-RPC URL")],
    deployment: Annotated[
        Path, typer.Option("--deployment", help="the deployment record (deployment.json in the state folder of `sterling up`)")
    ],
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="sealed deposits and the audit log (in <state-dir>/key-manager); default: .sterling-keymanager"),
    ] = None,
    blobs: Annotated[
        Path | None,
        typer.Option(
            "--blobs",
            help="the blob folder shared with the gateway, read and written by the model-key and competition sides "
            "(served when the deployment has a model market / competition market); default: <state-dir>/blobs",
        ),
    ] = None,
    platform_key: Annotated[
        Path | None,
        typer.Option(
            "--platform-key",
            help="the SIMULATED platform's key (development only; created if missing; default: <state-dir>/sim-platform.pem). "
            "Workers that register through this verifier launch their enclaves with the same key",
        ),
    ] = None,
    operator_key_file: Annotated[
        Path | None,
        typer.Option("--operator-key-file", help="file holding the operator's hex private key (else STERLING_KEYMANAGER_OPERATOR_KEY)"),
    ] = None,
    verifier_key_file: Annotated[
        Path | None,
        typer.Option("--verifier-key-file", help="file holding the verifier's hex private key (else STERLING_KEYMANAGER_VERIFIER_KEY)"),
    ] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on; default: 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on; default: 8100")] = None,
    confirmations: Annotated[
        int | None, typer.Option(min=0, help="blocks a claim must have on top of it before its keys are released; default: 0")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log every decision and the service's steps")] = False,
) -> None:
    """Serve the key manager and the attestation verifier over HTTP until SIGTERM or Ctrl-C (a service of its own).

    Keys never go on the command line: the operator's and the verifier's come from
    STERLING_KEYMANAGER_OPERATOR_KEY / STERLING_KEYMANAGER_VERIFIER_KEY or from key files.
    """
    import threading

    from marketplace.errors import SterlingError
    from sterling.keymanager_service import get_settings, run_keymanager
    from sterling.standalone import ChainView, log_json, stop_on_signals

    log_json(verbose)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        settings = get_settings(
            state_dir=state_dir, blobs=blobs, platform_key=platform_key, operator_key_file=operator_key_file,
            verifier_key_file=verifier_key_file, host=host, port=port, confirmations=confirmations,
        )  # fmt: skip
        settings.operator(), settings.verifier()  # a missing or malformed key stops here, before the chain is asked anything
        run_keymanager(ChainView.connect(rpc_url, deployment), settings, stop=stop)
    except SterlingError as e:
        err.print(f"[red]{type(e).__name__}:[/red] {e}", highlight=False)
        raise typer.Exit(1) from e
