"""Self-made Nitro-shaped documents and chains for negative tests (never trusted by production code).

Real vectors live in ``tests/fixtures/attestation``; these fakes exist to reach the checks a real
AWS document cannot (a foreign root, a CA leaf, an indefinite-length payload we can sign, ...).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "attestation"
BASE = FIXTURES / "nitro_base_2024-11-30"
EVERVAULT = FIXTURES / "nitro_evervault_2023-09-18"
BASE_T = 1732990000
EVERVAULT_T = 1695050165

FAKE_NOT_BEFORE = 1_700_000_000
FAKE_NOT_AFTER = FAKE_NOT_BEFORE + 3 * 3600
FAKE_T = FAKE_NOT_BEFORE + 600


def expected_output(folder: Path) -> dict[str, Any]:
    """``expected_output.txt``: the line ``VALID`` followed by the reference verifier's JSON."""
    verdict, _, body = (folder / "expected_output.txt").read_text().partition("\n")
    assert verdict.strip() == "VALID"
    return dict(json.loads(body))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _when(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def make_certificate(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool,
    not_before: int = FAKE_NOT_BEFORE,
    not_after: int = FAKE_NOT_AFTER,
    hash_algorithm: hashes.SHA256 | hashes.SHA384 | None = None,
) -> x509.Certificate:
    """A certificate for ``key``, self-signed unless ``issuer`` (name, key) is given."""
    issuer_name, issuer_key = issuer if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_when(not_before))
        .not_valid_after(_when(not_after))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(issuer_key, hash_algorithm or hashes.SHA384())


@dataclass
class FakeChain:
    """root -> intermediate -> leaf, all P-384, valid FAKE_NOT_BEFORE..FAKE_NOT_AFTER."""

    root_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    intermediate_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    leaf_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    leaf_is_ca: bool = False
    intermediate_is_ca: bool = True

    def __post_init__(self) -> None:
        self.root = make_certificate(subject="fake-root", key=self.root_key, ca=True)
        self.intermediate = make_certificate(
            subject="fake-intermediate", key=self.intermediate_key, issuer=("fake-root", self.root_key), ca=self.intermediate_is_ca
        )
        self.leaf = make_certificate(
            subject="fake-leaf", key=self.leaf_key, issuer=("fake-intermediate", self.intermediate_key), ca=self.leaf_is_ca
        )

    def payload(self, **overrides: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "module_id": "i-00000000000000000-enc0000000000000000",
            "digest": "SHA384",
            "timestamp": FAKE_T * 1000,
            "pcrs": {i: bytes([i + 1]) * 48 for i in range(16)},
            "certificate": self.leaf.public_bytes(Encoding.DER),
            "cabundle": [self.root.public_bytes(Encoding.DER), self.intermediate.public_bytes(Encoding.DER)],
        }
        fields.update(overrides)
        return {k: v for k, v in fields.items() if v is not _ABSENT}

    def document(self, payload: dict[str, Any] | bytes | None = None, **kwargs: Any) -> bytes:
        body = payload if isinstance(payload, bytes) else cbor2.dumps(payload if payload is not None else self.payload())
        return sign_document(body, self.leaf_key, **kwargs)


_ABSENT = object()
ABSENT: Any = _ABSENT
"""Pass as a payload override to leave a field out entirely."""


def sign_document(
    payload: bytes, key: ec.EllipticCurvePrivateKey, *, protected: bytes = b"\xa1\x01\x38\x22", tagged: bool = False
) -> bytes:
    """A COSE_Sign1 over ``payload`` with ES384 (raw ``r || s``), optionally wrapped in tag 18."""
    der = key.sign(cbor2.dumps(["Signature1", protected, b"", payload]), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    cose: Any = [protected, {}, payload, r.to_bytes(48, "big") + s.to_bytes(48, "big")]
    return cbor2.dumps(cbor2.CBORTag(18, cose) if tagged else cose)


def indefinite_map(fields: dict[str, Any]) -> bytes:
    """``fields`` as a CBOR indefinite-length map (0xBF ... 0xFF), as newer NSM firmware emits."""
    return b"\xbf" + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in fields.items()) + b"\xff"


def split(document: bytes) -> list[Any]:
    """The four COSE_Sign1 items of a real document."""
    value = cbor2.loads(document)
    return list(value.value if isinstance(value, cbor2.CBORTag) else value)


def with_payload(document: bytes, **changes: Any) -> bytes:
    """Re-encode a real document's payload with ``changes`` (the AWS signature no longer matches)."""
    items = split(document)
    payload = cbor2.loads(items[2])
    payload.update(changes)
    items[2] = cbor2.dumps({k: v for k, v in payload.items() if v is not _ABSENT})
    return cbor2.dumps(items)
