"""The attestation verification service.

It issues single-use nonces, checks an enclave's evidence against them, against the pinned
platform key and against the on-chain measurement allow-list, and then signs a compact EIP-712
registration certificate that ``EnclaveRegistry.register`` accepts from registered verifiers.

Formats (see ``docs/attestation.md``):

* ``aws-nitro`` (:meth:`AttestationVerifier.certify_nitro`) — AWS Nitro Enclaves attestation
  documents, verified against the pinned AWS Nitro root by :mod:`oracle.attestation`.
* ``sim`` (:meth:`AttestationVerifier.certify`) — development evidence from
  :class:`enclave_worker.sim_platform.SimPlatform`, which proves nothing about real hardware.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from enclave_worker.sim_platform import EvidenceInvalid, SimEvidence
from enclave_worker.trusted.onchain import Role
from enclave_worker.trusted.report import report_data
from marketplace.contracts import CERTIFICATE_TYPES, Certificate, RegistryClient
from marketplace.errors import AttestationRejected

from .attestation import (
    NitroDocument,
    NitroPolicy,
    NitroPolicyRefused,
    check_nitro_policy,
    nitro_measurement,
    verify_nitro_document,
)

logger = logging.getLogger(__name__)

NONCE_BYTES = 32
NONCE_TTL_SECONDS = 300
DEFAULT_CERTIFICATE_TTL = 24 * 3600
NITRO_MAX_AGE_SECONDS = NONCE_TTL_SECONDS
NITRO_PRODUCTION_POLICY = NitroPolicy(allow_debug=False, max_age_seconds=NITRO_MAX_AGE_SECONDS)
"""Default for :meth:`AttestationVerifier.certify_nitro`: no debug mode, documents at most 5 minutes old."""
SECP256K1_UNCOMPRESSED_BYTES = 65
X25519_KEY_BYTES = 32
NO_ENCRYPTION_KEY = bytes(X25519_KEY_BYTES)


class AttestationVerifier:
    """Checks enclave evidence and signs registration certificates."""

    def __init__(
        self,
        *,
        signer: LocalAccount,
        registry: RegistryClient,
        platform_public_key: Ed25519PublicKey | None = None,
        certificate_ttl: int = DEFAULT_CERTIFICATE_TTL,
    ) -> None:
        """Create a verifier; it issues nonces and remembers certified documents in memory.

        Args:
            signer: the verifier's account; ``EnclaveRegistry`` must hold it as a verifier.
            registry: the registry whose measurement allow-list and EIP-712 domain apply.
            platform_public_key: the pinned simulated-platform key; ``None`` disables the
                development-only ``sim`` format (``aws-nitro`` needs no key: its root is pinned).
            certificate_ttl: seconds a certificate stays valid on-chain.
        """
        self.signer = signer
        self.registry = registry
        self.platform_public_key = platform_public_key
        self.certificate_ttl = certificate_ttl
        self._nonces: dict[bytes, float] = {}
        self._certified_documents: dict[tuple[str, int], int] = {}  # (module_id, timestamp_ms) -> chain not_after
        if platform_public_key is not None:
            logger.warning("attestation format 'sim' is enabled: development only, not evidence of real TEE hardware")

    def challenge(self) -> bytes:
        """A fresh single-use nonce, valid for five minutes.

        For ``sim`` the enclave hashes it into its report data; for ``aws-nitro`` the enclave passes
        it as the NSM attestation request's ``nonce``.
        """
        now = time.monotonic()
        self._nonces = {n: t for n, t in self._nonces.items() if now - t < NONCE_TTL_SECONDS}
        nonce = os.urandom(NONCE_BYTES)
        self._nonces[nonce] = now
        return nonce

    def _consume_nonce(self, nonce: object) -> bytes:
        """Accept ``nonce`` once, if this verifier issued it less than five minutes ago."""
        issued = self._nonces.pop(nonce, None) if isinstance(nonce, bytes) else None
        if not isinstance(nonce, bytes) or issued is None or time.monotonic() - issued >= NONCE_TTL_SECONDS:
            raise AttestationRejected("nonce was not issued by this verifier or was already used")
        return nonce

    def certify(self, *, evidence: bytes, claims: dict[str, Any], operator: str) -> tuple[Certificate, bytes]:
        """Verify ``sim`` evidence (development only) for the enclave in ``claims`` and sign its certificate.

        Args:
            evidence: the platform-signed evidence.
            claims: the enclave's ``attest`` reply: role, signer, encryption_key, nonce.
            operator: the account that will register the enclave and be paid for its work.

        Raises:
            AttestationRejected: unknown or reused nonce, bad evidence, key binding mismatch, or a
                measurement not approved on-chain for the claimed role.
        """
        if self.platform_public_key is None:
            raise AttestationRejected("attestation format 'sim' is not enabled on this verifier")
        nonce = self._consume_nonce(claims.get("nonce"))
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

    def certify_nitro(
        self,
        document: bytes,
        *,
        role: Role,
        operator: str,
        encryption_key: bytes | None = None,
        at: float | None = None,
        policy: NitroPolicy = NITRO_PRODUCTION_POLICY,
    ) -> tuple[Certificate, bytes]:
        """Verify an AWS Nitro attestation document and sign the enclave's registration certificate.

        Sterling's binding convention (``docs/attestation.md``): the document's ``public_key`` is the
        enclave's secp256k1 signing key (65 bytes, ``0x04 || X || Y``) and the certificate's signer is
        its Ethereum address; ``user_data``, if present, is the enclave's 32-byte X25519 encryption
        key, and if absent the certificate's encryption key is zero (nothing can be wrapped to it).
        The measurement is :func:`~oracle.attestation.nitro_measurement` of PCR0-2.

        Args:
            document: the COSE_Sign1 attestation document.
            role: the role to certify the enclave for; its measurement must be approved for it.
            operator: the account that will register the enclave and be paid for its work.
            encryption_key: if given, the document's ``user_data`` must equal it.
            at: verification time ``T`` in Unix seconds (certificate chain and freshness);
                ``None`` means ``time.time()``. The certificate's ``valid_until`` follows chain time.
            policy: debug mode, expected PCRs, maximum age. A document without a nonce is only
                accepted if ``policy.max_age_seconds`` is set.

        Returns:
            ``(certificate, signature)`` ready for ``EnclaveRegistry.register``.

        Raises:
            AttestationRejected: the document fails verification or policy, its nonce was not issued
                here or was used, it was already certified (replay), the binding is malformed or
                does not match ``encryption_key``, or the measurement is not approved for ``role``.

        Example:
            >>> nonce = verifier.challenge()              # sent to the enclave, which asks its NSM
            >>> cert, sig = verifier.certify_nitro(document, role=Role.TRAINER, operator=operator.address)
            >>> registry.register(operator, cert, sig)
        """
        now = time.time() if at is None else at
        doc = verify_nitro_document(document, at=now)
        check_nitro_policy(doc, policy, at=now)
        self._check_freshness(doc, policy, now=now)
        signer = _nitro_signer_address(doc.public_key)
        bound_key = _nitro_encryption_key(doc.user_data, expected=encryption_key)
        try:
            measurement = nitro_measurement(doc.pcrs)
        except ValueError as e:
            raise NitroPolicyRefused(str(e)) from e
        if not self.registry.is_measurement_approved(role, measurement):
            raise AttestationRejected(f"measurement {measurement.hex()} is not approved for role {role.name.lower()}")
        certificate = Certificate(
            role=role,
            measurement=measurement,
            signer=signer,
            encryption_key=bound_key,
            operator=str(to_checksum_address(operator)),
            valid_until=self.registry.chain.now() + self.certificate_ttl,
        )
        signed = self.signer.sign_typed_data(self.registry.domain(), CERTIFICATE_TYPES, certificate.message())
        self._certified_documents[(doc.module_id, doc.timestamp_ms)] = doc.not_after
        if bound_key == NO_ENCRYPTION_KEY:
            logger.warning("nitro enclave %s bound no encryption key: no data keys can be wrapped to it", signer)
        logger.info(
            "certified %s nitro enclave %s (module %s, measurement %s)", role.name.lower(), signer, doc.module_id, measurement.hex()
        )
        return certificate, bytes(signed.signature)

    def _check_freshness(self, doc: NitroDocument, policy: NitroPolicy, *, now: float) -> None:
        """A nonce this verifier issued, or else a bounded age; and never the same document twice."""
        if doc.nonce is not None:
            self._consume_nonce(doc.nonce)
        elif policy.max_age_seconds is None:
            raise AttestationRejected("document carries no nonce and the policy sets no maximum age: freshness unknown")
        # Documents whose chain has expired at `now` can no longer verify, so they need no memory.
        self._certified_documents = {k: end for k, end in self._certified_documents.items() if end >= now}
        if (doc.module_id, doc.timestamp_ms) in self._certified_documents:
            raise AttestationRejected(f"replay: document {doc.module_id} @ {doc.timestamp_ms} was already certified")


def _nitro_signer_address(public_key: bytes | None) -> str:
    """The Ethereum address of a 65-byte uncompressed secp256k1 key: ``keccak256(X || Y)[12:]``."""
    if public_key is None or len(public_key) != SECP256K1_UNCOMPRESSED_BYTES or public_key[0] != 0x04:
        raise AttestationRejected("public_key must be the enclave's 65-byte uncompressed secp256k1 signing key")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), public_key)
    except ValueError as e:
        raise AttestationRejected("public_key is not a point on secp256k1") from e
    return str(to_checksum_address(keccak(public_key[1:])[12:]))


def _nitro_encryption_key(user_data: bytes | None, *, expected: bytes | None) -> bytes:
    """The X25519 key bound in ``user_data`` (zero if none), checked against ``expected`` if given."""
    if user_data is not None and len(user_data) != X25519_KEY_BYTES:
        raise AttestationRejected(f"user_data must be absent or a {X25519_KEY_BYTES}-byte X25519 key, got {len(user_data)} bytes")
    if expected is not None and user_data != expected:
        raise AttestationRejected("user_data mismatch: the document does not bind the given encryption key")
    return NO_ENCRYPTION_KEY if user_data is None else user_data
