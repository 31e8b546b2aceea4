"""The bridge between the chain and the off-chain world: attestation verification, the chain indexer, job dispatch.

Submodules are imported on first use, so ``sterling attest verify`` does not load the training stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dispatcher import Dispatcher
    from .indexer import Indexer
    from .verifier import AttestationVerifier

__all__ = ["AttestationVerifier", "Dispatcher", "Indexer"]


def __getattr__(name: str) -> Any:
    if name == "Dispatcher":
        from .dispatcher import Dispatcher

        return Dispatcher
    if name == "Indexer":
        from .indexer import Indexer

        return Indexer
    if name == "AttestationVerifier":
        from .verifier import AttestationVerifier

        return AttestationVerifier
    raise AttributeError(f"module 'oracle' has no attribute {name!r}")
