"""The attestation verification service.

It issues single-use nonces, checks an enclave's evidence against them, against the pinned
platform key and against the on-chain measurement allow-list, and then signs a compact EIP-712
registration certificate that ``EnclaveRegistry.register`` accepts from registered verifiers.

Formats: ``sim`` only in this version — development evidence from
:class:`enclave_worker.sim_platform.SimPlatform`, which proves nothing about real hardware.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from enclave_worker.sim_platform import EvidenceInvalid, SimEvidence
from enclave_worker.trusted.report import report_data
from enclave_worker.trusted.roles import Role
from marketplace.contracts import CERTIFICATE_TYPES, Certificate, RegistryClient
from marketplace.errors import AttestationRejected

logger = logging.getLogger(__name__)

NONCE_BYTES = 32
NONCE_TTL_SECONDS = 300
DEFAULT_CERTIFICATE_TTL = 24 * 3600


class AttestationVerifier:
    """Checks enclave evidence and signs registration certificates."""

    def __init__(
        self,
        *,
        signer: LocalAccount,
        registry: RegistryClient,
        platform_public_key: Ed25519PublicKey,
        certificate_ttl: int = DEFAULT_CERTIFICATE_TTL,
    ) -> None:
        self.signer = signer
        self.registry = registry
        self.platform_public_key = platform_public_key
        self.certificate_ttl = certificate_ttl
        self._nonces: dict[bytes, float] = {}
        logger.warning("attestation format 'sim' is enabled: development only, not evidence of real TEE hardware")

    def challenge(self) -> bytes:
        """A fresh single-use nonce, valid for five minutes."""
        now = time.monotonic()
        self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_TTL_SECONDS}
        nonce = os.urandom(NONCE_BYTES)
        self._nonces[nonce] = now
        return nonce

    def certify(self, *, evidence: bytes, claims: dict[str, Any], operator: str) -> tuple[Certificate, bytes]:
        """Verify evidence for the enclave described by ``claims`` and sign its certificate.

        Args:
            evidence: the platform-signed evidence.
            claims: the enclave's ``attest`` reply: role, signer, encryption_key, nonce.
            operator: the account that will register the enclave and be paid for its work.

        Raises:
            AttestationRejected: unknown or reused nonce, bad evidence, key binding mismatch, or a
                measurement not approved on-chain for the claimed role.
        """
        nonce = claims.get("nonce")
        if not isinstance(nonce, bytes) or self._nonces.pop(nonce, None) is None:
            raise AttestationRejected("nonce was not issued by this verifier or was already used")
        try:
            role = Role(int(claims["role"]))
            signer, encryption_key = bytes(claims["signer"]), bytes(claims["encryption_key"])
        except (KeyError, TypeError, ValueError) as e:
            raise AttestationRejected(f"malformed enclave claims: {e}") from e
        if len(signer) != 20 or len(encryption_key) != 32:
            raise AttestationRejected("enclave claims carry keys of the wrong length")
        try:
            parsed = SimEvidence.parse(evidence, self.platform_public_key)
        except EvidenceInvalid as e:
            raise AttestationRejected(str(e)) from e
        if parsed.report_data != report_data(role, signer, encryption_key, nonce):
            raise AttestationRejected("evidence does not bind the claimed keys and nonce")
        if not self.registry.is_measurement_approved(role, parsed.measurement):
            raise AttestationRejected(
                f"measurement {parsed.measurement.hex()} is not approved for role {role.name.lower()}"
            )
        certificate = Certificate(
            role=role,
            measurement=parsed.measurement,
            signer=str(to_checksum_address(signer)),
            encryption_key=encryption_key,
            operator=str(to_checksum_address(operator)),
            valid_until=self.registry.chain.now() + self.certificate_ttl,
        )
        signed = self.signer.sign_typed_data(self.registry.domain(), CERTIFICATE_TYPES, certificate.message())
        logger.info("certified %s enclave %s (measurement %s)", role.name.lower(), certificate.signer, parsed.measurement.hex())
        return certificate, bytes(signed.signature)
