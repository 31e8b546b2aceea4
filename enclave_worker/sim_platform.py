"""Simulated TEE platform (development only): measures, launches and quotes trusted processes.

It plays the part a CPU plays for SGX or the Nitro hypervisor plays for Nitro enclaves: it
computes the measurement of the code it launches and signs ``(measurement, report_data)`` with
a platform key the enclave never sees. The verifier pins the platform's public key. Evidence of
this format proves nothing about real hardware; production deployments use ``aws-nitro``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import measurement
from .host import EnclaveProcess
from .trusted.errors import SterlingError
from .trusted.onchain import Role

logger = logging.getLogger(__name__)

FORMAT = "sim"
EVIDENCE_VERSION = 1
MAX_EVIDENCE_BYTES = 4096


class EvidenceInvalid(SterlingError, ValueError):
    """Simulated evidence is malformed or its platform signature does not verify."""


@dataclass(frozen=True)
class SimEvidence:
    """The platform-signed statement about one enclave."""

    measurement: bytes
    report_data: bytes
    timestamp: int
    raw: bytes

    @classmethod
    def parse(cls, raw: bytes, platform_public_key: Ed25519PublicKey) -> SimEvidence:
        """Decode and check the platform signature.

        Raises:
            EvidenceInvalid: malformed, wrong format, or bad signature.
        """
        if len(raw) > MAX_EVIDENCE_BYTES:
            raise EvidenceInvalid(f"evidence of {len(raw)} bytes exceeds {MAX_EVIDENCE_BYTES}")
        try:
            outer = cbor2.loads(raw)
            body = cbor2.loads(outer["body"])
            signature = outer["signature"]
            fmt, version = body["format"], body["version"]
            value = cls(measurement=body["measurement"], report_data=body["report_data"], timestamp=body["timestamp"], raw=raw)
        except Exception as e:  # any decoding problem is the same verdict for the caller
            raise EvidenceInvalid(f"malformed sim evidence ({type(e).__name__})") from e
        if fmt != FORMAT or version != EVIDENCE_VERSION:
            raise EvidenceInvalid(f"not sim evidence v{EVIDENCE_VERSION}: format {fmt!r} version {version!r}")
        if not (isinstance(value.measurement, bytes) and len(value.measurement) == 32):
            raise EvidenceInvalid("measurement must be 32 bytes")
        if not (isinstance(value.report_data, bytes) and len(value.report_data) == 32):
            raise EvidenceInvalid("report_data must be 32 bytes")
        try:
            platform_public_key.verify(signature, outer["body"])
        except (InvalidSignature, TypeError) as e:
            raise EvidenceInvalid("sim evidence signature does not verify against the pinned platform key") from e
        return value


class SimPlatform:
    """A development stand-in for TEE hardware, holding the simulated platform key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> SimPlatform:
        """Use the platform key at ``path``, creating it (mode 0600) on first use."""
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise EvidenceInvalid(f"{path} does not hold an Ed25519 platform key")
            return cls(key)
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        logger.warning("created a new SIMULATED platform key at %s (development only)", path)
        return cls(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def public_key_bytes(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def launch(self, role: Role, *, code_root: Path | None = None, threads: int | None = None, niceness: int = 0) -> LaunchedEnclave:
        """Measure the trusted code, then start a trusted process running it with its sealing key.

        Args:
            code_root: directory holding the ``enclave_worker`` package to run (this checkout by default).
            threads, niceness: passed to :meth:`EnclaveProcess.start`.
        """
        root = code_root or measurement.PACKAGE_ROOT.parent
        value = measurement.measure(root / "enclave_worker")
        process = EnclaveProcess.start(role, code_root=root, seal_key=self.sealing_key(value), threads=threads, niceness=niceness)
        return LaunchedEnclave(process=process, measurement=value, platform=self)

    def sealing_key(self, measurement_value: bytes) -> bytes:
        """The key an enclave with this measurement gets on this platform (same code, same key)."""
        secret = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sterling/sim/platform-secret/v1").derive(
            self._key.private_bytes_raw()
        )
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"sterling/v1/seal/" + measurement_value).derive(secret)

    def quote(self, measurement_value: bytes, report_data: bytes) -> bytes:
        """Sign evidence binding ``report_data`` to ``measurement_value``."""
        body = cbor2.dumps(
            {
                "format": FORMAT,
                "version": EVIDENCE_VERSION,
                "measurement": measurement_value,
                "report_data": report_data,
                "timestamp": int(time.time()),
            }
        )
        return cbor2.dumps({"body": body, "signature": self._key.sign(body)})


@dataclass
class LaunchedEnclave:
    """A trusted process together with the measurement the platform took when launching it."""

    process: EnclaveProcess
    measurement: bytes
    platform: SimPlatform

    def attest(self, nonce: bytes) -> tuple[dict[str, object], bytes]:
        """Ask the enclave for its report, then have the platform sign it.

        Returns:
            ``(claims, evidence)``: the enclave's role, signer, encryption key and nonce, and the
            platform-signed evidence binding them (through ``report_data``) to the measurement.
        """
        claims = self.process.request("attest", nonce=nonce)
        return claims, self.platform.quote(self.measurement, claims["report_data"])

    def close(self) -> None:
        self.process.close()
