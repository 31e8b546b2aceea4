"""Entry point of a trusted process: ``python -m enclave_worker.trusted.main --role trainer|key_manager|inference|evaluator``.

Reads request frames from stdin and writes reply frames to stdout (see :mod:`.protocol`); logs go
to stderr and never contain keys, plaintext or weights. Errors are answered with an ``error``
frame and the process keeps serving.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import BinaryIO

from . import protocol
from .enclave import Enclave
from .errors import SterlingError
from .onchain import Role

logger = logging.getLogger("enclave_worker.trusted")

_ROLES = {"trainer": Role.TRAINER, "key_manager": Role.KEY_MANAGER, "inference": Role.INFERENCE, "evaluator": Role.EVALUATOR}


def serve(enclave: Enclave, src: BinaryIO, dst: BinaryIO) -> None:
    """Answer requests until the host closes the stream."""
    channel = protocol.HostChannel(src, dst)
    emit = channel.emit

    while True:
        try:
            message = protocol.read_frame(src)
        except SterlingError as e:
            emit({"type": "error", "error": type(e).__name__, "message": str(e)})
            return  # the stream is out of sync; the host must restart us
        if message is None:
            return
        try:
            op, fields = protocol.validate_request(message)
            result = enclave.handle(op, fields, emit, read=channel.read_into)
            emit({"type": "result", **result})
        except SterlingError as e:
            logger.info("request refused: %s", type(e).__name__)
            emit({"type": "error", "error": type(e).__name__, "message": str(e)})
            if channel.broken:
                return  # a read's reply left the stream out of step; the host must restart us
        except Exception as e:  # never let one bad request kill the enclave, never echo its data
            logger.exception("internal error of type %s", type(e).__name__)
            emit({"type": "error", "error": "InternalError", "message": f"internal error ({type(e).__name__})"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--role", choices=list(_ROLES), required=True)
    parser.add_argument("--seal-fd", type=int, default=None, help="file descriptor the platform writes the 32-byte sealing key to")
    parser.add_argument("--threads", type=int, default=None, help="compute threads for training or inference (default: one per core)")
    parser.add_argument("--models", type=int, default=None, help="models an inference enclave keeps loaded (LRU)")
    parser.add_argument(
        "--memory-budget-mib", type=int, default=None, help="memory a trainer plans a job within (default 2048; docs/enclave-protocol.md)"
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        if not 1 <= args.threads <= 1024:
            parser.error("--threads must be between 1 and 1024")
        import torch

        torch.set_num_threads(args.threads)
    if args.models is not None and not 1 <= args.models <= 1024:
        parser.error("--models must be between 1 and 1024")
    if args.memory_budget_mib is not None and not 1 <= args.memory_budget_mib <= 1 << 24:
        parser.error("--memory-budget-mib must be between 1 and 16777216")
    seal_key = None
    if args.seal_fd is not None:
        with os.fdopen(args.seal_fd, "rb") as f:
            seal_key = f.read(33)
        if len(seal_key) != 32:
            parser.error("the platform must provide exactly 32 bytes of sealing key")
    logging.basicConfig(level=os.environ.get("STERLING_ENCLAVE_LOG", "WARNING"), stream=sys.stderr)
    # Frames own the real stdout; anything a library prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    options: dict[str, int] = {} if args.models is None else {"model_cache": args.models}
    if args.memory_budget_mib is not None:
        options["memory_budget"] = args.memory_budget_mib << 20
    enclave = Enclave(_ROLES[args.role], seal_key=seal_key, **options)
    gc.collect()
    gc.freeze()  # the loaded code lives as long as the process: full collections need not walk it
    serve(enclave, sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
