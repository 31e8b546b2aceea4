"""The bridge between the chain and the off-chain world: attestation verification and job dispatch."""

from .dispatcher import Dispatcher
from .verifier import AttestationVerifier

__all__ = ["AttestationVerifier", "Dispatcher"]
