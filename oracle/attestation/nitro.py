"""AWS Nitro Enclaves attestation documents: decoding and cryptographic verification.

This module answers one question: did AWS Nitro hardware sign this document, and was its
certificate chain valid at time ``T``? It does not judge what the document says (debug mode,
which PCRs are acceptable, how old it may be): that is :mod:`oracle.attestation.policy`.

The steps follow AWS "Verifying the root of trust" and the Nitro attestation document
specification (``aws/aws-nitro-enclaves-nsm-api``, ``docs/attestation_process.md``):

1. CBOR-decode a COSE_Sign1 (optional tag 18): ``[protected bstr, unprotected map, payload bstr,
   signature bstr]``, with no trailing bytes.
2. The protected header must be exactly ``{1: -35}`` (alg ES384).
3. The payload map must carry ``module_id``, ``digest == "SHA384"``, ``timestamp > 0``, ``pcrs``,
   ``certificate`` and ``cabundle`` within the specification's size bounds; ``public_key``,
   ``user_data`` and ``nonce`` may be absent or CBOR null. Indefinite-length maps are accepted.
4. ``cabundle[0]`` must be byte-identical to the pinned AWS Nitro Root-G1 shipped with this package
   (DER SHA-256 ``641A0321...79BB5B``).
5. The chain root -> ``cabundle[1:]`` -> ``certificate`` is checked link by link: issuer name equals the
   issuer's subject, ECDSA P-384 / SHA-384 signature, CA basic constraints (and path length, key
   usage) on every issuer, and none on the leaf.
6. Every certificate must be valid at ``T`` (inclusive bounds), ``T`` supplied by the caller.
7. ``Sig_structure = ["Signature1", protected, b"", payload]`` is built from the original bytes.
8. The 96-byte ``r || s`` signature is converted to DER and verified with the leaf's P-384 key.

:func:`nitro_measurement` derives Sterling's 32-byte on-chain measurement from PCR0-2.

Revocation (CRL distribution points on the intermediates) is not checked: the chain is
short-lived (the leaf lives about three hours) and most verifiers skip it.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import SignatureAlgorithmOID

from marketplace.errors import AttestationRejected, ConfigError

__all__ = [
    "AWS_NITRO_ROOT_G1_SHA256",
    "MAX_DOCUMENT_BYTES",
    "NitroDocument",
    "NitroDocumentInvalid",
    "aws_nitro_root",
    "nitro_measurement",
    "verify_nitro_document",
]

AWS_NITRO_ROOT_G1_SHA256 = bytes.fromhex("641A0321A3E244EFE456463195D606317ED7CDCC3C1756E09893F3C68F79BB5B")
"""SHA-256 of the DER of AWS Nitro Enclaves Root-G1, as AWS publishes it."""

ROOT_PEM_RESOURCE = "aws_nitro_root_g1.pem"
MAX_DOCUMENT_BYTES = 16 * 1024
COSE_SIGN1_TAG = 18
COSE_ALG_ES384 = -35
SIGNATURE_BYTES = 96
PCR_LENGTHS = frozenset({32, 48, 64})
MAX_PCRS = 32
MAX_CERTIFICATE_BYTES = 1024
MAX_CABUNDLE = 16  # AWS chains have four entries; anything near this bound is not a Nitro document
MAX_USER_DATA_BYTES = 512
MAX_NONCE_BYTES = 512
MAX_PUBLIC_KEY_BYTES = 1024
MEASUREMENT_DOMAIN = b"sterling/nitro-measurement/v1"
MEASURED_PCRS = (0, 1, 2)


class NitroDocumentInvalid(AttestationRejected, ValueError):
    """An AWS Nitro attestation document is malformed or fails a cryptographic check.

    The message is one line naming the failed check, e.g. ``COSE signature invalid``.
    """


@dataclass(frozen=True)
class NitroDocument:
    """A verified AWS Nitro attestation document.

    Attributes:
        module_id: the enclave's id, ``<instance id>-enc<enclave id>``.
        timestamp_ms: when the Nitro Security Module produced the document (Unix milliseconds).
        digest: the PCR hash algorithm, always ``"SHA384"``.
        pcrs: platform configuration registers by index (PCR0 image, PCR1 kernel, PCR2 application,
            PCR3 IAM role, PCR4 instance, PCR8 signing certificate).
        public_key: the optional key the enclave asked the NSM to bind, or ``None``.
        user_data: the optional user data the enclave asked the NSM to bind, or ``None``.
        nonce: the optional nonce the enclave asked the NSM to bind, or ``None``.
        not_before: start of the window (Unix seconds) in which the whole chain is valid.
        not_after: end of that window (Unix seconds, inclusive); the leaf lives about three hours.
        leaf_subject: the leaf certificate's subject (RFC 4514).
        certificate: the leaf certificate (DER).
        cabundle: the CA bundle (DER), root first.
    """

    module_id: str
    timestamp_ms: int
    digest: str
    pcrs: dict[int, bytes]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    not_before: int
    not_after: int
    leaf_subject: str
    certificate: bytes
    cabundle: tuple[bytes, ...]


@cache
def aws_nitro_root() -> x509.Certificate:
    """The AWS Nitro Enclaves Root-G1 shipped with this package, checked against its fingerprint.

    Raises:
        ConfigError: the shipped PEM is missing or is not the pinned certificate.
    """
    try:
        pem = resources.files(__package__).joinpath(ROOT_PEM_RESOURCE).read_bytes()
        root = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load the shipped AWS Nitro root {ROOT_PEM_RESOURCE}: {e}") from e
    if root.fingerprint(hashes.SHA256()) != AWS_NITRO_ROOT_G1_SHA256:
        raise ConfigError(f"the shipped {ROOT_PEM_RESOURCE} is not AWS Nitro Root-G1 (fingerprint mismatch)")
    return root


def verify_nitro_document(document: bytes, *, at: float | None = None) -> NitroDocument:
    """Verify an AWS Nitro attestation document against the pinned AWS root at time ``at``.

    Args:
        document: the COSE_Sign1 bytes the enclave obtained from its Nitro Security Module.
        at: the verification time ``T`` (Unix seconds). Pass it explicitly; ``None`` means
            ``time.time()``.

    Returns:
        The decoded document. Nothing in it has been judged yet: apply a
        :class:`~oracle.attestation.policy.NitroPolicy` before trusting it.

    Raises:
        NitroDocumentInvalid: with a one-line reason naming the check that failed.

    Example:
        >>> doc = verify_nitro_document(Path("attestation.cose").read_bytes(), at=1732990000)
        >>> doc.pcrs[0].hex()[:6]
        'ec74bf'
    """
    return _verify(document, at=time.time() if at is None else at, root=aws_nitro_root())


def _verify(document: bytes, *, at: float, root: x509.Certificate) -> NitroDocument:
    """Steps 1-8 with the trust anchor as a parameter (the public function pins AWS's)."""
    protected, payload_bytes, signature = _decode_cose_sign1(document)
    _check_protected_header(protected)
    fields = _decode_payload(payload_bytes)

    if fields["cabundle"][0] != root.public_bytes(Encoding.DER):
        raise NitroDocumentInvalid("root certificate is not the pinned AWS Nitro root")
    chain = [root, *(_load_certificate(der, f"cabundle[{i}]") for i, der in enumerate(fields["cabundle"][1:], 1))]
    leaf = _load_certificate(fields["certificate"], "certificate")
    _check_chain(chain, leaf)
    not_before, not_after = _check_validity([*chain, leaf], at)
    _check_cose_signature(leaf, protected, payload_bytes, signature)

    return NitroDocument(
        module_id=fields["module_id"],
        timestamp_ms=fields["timestamp"],
        digest=fields["digest"],
        pcrs=fields["pcrs"],
        public_key=fields["public_key"],
        user_data=fields["user_data"],
        nonce=fields["nonce"],
        not_before=not_before,
        not_after=not_after,
        leaf_subject=leaf.subject.rfc4514_string(),
        certificate=fields["certificate"],
        cabundle=tuple(fields["cabundle"]),
    )


def nitro_measurement(pcrs: Mapping[int, bytes]) -> bytes:
    """The 32-byte on-chain measurement of a Nitro enclave image.

    ``sha256(b"sterling/nitro-measurement/v1" || PCR0 || PCR1 || PCR2)`` — enclave image file,
    kernel and bootstrap, application. PCR3/4/8 (IAM role, instance, signing certificate) vary per
    deployment and are left to :attr:`~oracle.attestation.policy.NitroPolicy.expected_pcrs`.

    Raises:
        ValueError: PCR0, PCR1 or PCR2 is missing, or they differ in length.
    """
    missing = [i for i in MEASURED_PCRS if i not in pcrs]
    if missing:
        raise ValueError(f"PCR{missing[0]} is missing: cannot compute the Nitro measurement")
    values = [pcrs[i] for i in MEASURED_PCRS]
    if len({len(v) for v in values}) != 1:
        raise ValueError("PCR0-2 differ in length: cannot compute the Nitro measurement")
    return hashlib.sha256(MEASUREMENT_DOMAIN + b"".join(values)).digest()


# ---------------------------------------------------------------------------------------- steps 1-3


def _cbor_decode(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item; any decoder failure becomes :class:`NitroDocumentInvalid`."""
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception as e:  # the decoder raises many types on hostile input; the verdict is the same
        raise NitroDocumentInvalid(f"malformed {what}: {type(e).__name__}") from e
    if stream.tell() != len(data):
        raise NitroDocumentInvalid(f"malformed {what}: {len(data) - stream.tell()} trailing bytes")
    return value


def _decode_cose_sign1(document: bytes) -> tuple[bytes, bytes, bytes]:
    """Step 1: ``(protected, payload, signature)`` of a COSE_Sign1 structure."""
    if not isinstance(document, (bytes, bytearray, memoryview)):
        raise NitroDocumentInvalid(f"malformed document: expected bytes, got {type(document).__name__}")
    document = bytes(document)
    if not document:
        raise NitroDocumentInvalid("malformed document: empty")
    if len(document) > MAX_DOCUMENT_BYTES:
        raise NitroDocumentInvalid(f"malformed document: {len(document)} bytes exceeds {MAX_DOCUMENT_BYTES}")
    value = _cbor_decode(document, "COSE_Sign1")
    if isinstance(value, cbor2.CBORTag):
        if value.tag != COSE_SIGN1_TAG:
            raise NitroDocumentInvalid(f"malformed COSE_Sign1: unexpected CBOR tag {value.tag}")
        value = value.value
    if not (isinstance(value, (list, tuple)) and len(value) == 4):  # tagged content decodes as a tuple
        raise NitroDocumentInvalid("malformed COSE_Sign1: expected an array of 4 items")
    protected, unprotected, payload, signature = value
    if not (isinstance(protected, bytes) and isinstance(unprotected, Mapping)
            and isinstance(payload, bytes) and isinstance(signature, bytes)):
        raise NitroDocumentInvalid("malformed COSE_Sign1: expected [bstr, map, bstr, bstr]")
    return protected, payload, signature


def _check_protected_header(protected: bytes) -> None:
    """Step 2: the protected header is exactly ``{1: -35}``."""
    header = _cbor_decode(protected, "protected header") if protected else {}
    if not isinstance(header, Mapping):
        raise NitroDocumentInvalid("malformed protected header: not a map")
    alg = header.get(1)
    if alg is None:
        raise NitroDocumentInvalid("protected header carries no algorithm")
    if type(alg) is not int or alg != COSE_ALG_ES384:
        raise NitroDocumentInvalid(f"unsupported algorithm {alg!r} (only ES384, -35)")
    if len(header) != 1 or any(type(k) is not int for k in header):
        raise NitroDocumentInvalid("protected header must be exactly {1: -35} (ES384)")


def _decode_payload(payload: bytes) -> dict[str, Any]:
    """Step 3: the payload map with types and sizes checked; optional fields normalised to ``None``."""
    raw = _cbor_decode(payload, "payload")
    if not isinstance(raw, Mapping):
        raise NitroDocumentInvalid("malformed payload: not a map")
    fields: dict[str, Any] = {}

    module_id = raw.get("module_id")
    if not (isinstance(module_id, str) and module_id):
        raise NitroDocumentInvalid("malformed payload: module_id must be a non-empty text string")
    fields["module_id"] = module_id

    digest = raw.get("digest")
    if digest != "SHA384" or not isinstance(digest, str):
        raise NitroDocumentInvalid(f"malformed payload: digest must be 'SHA384', got {_short(digest)}")
    fields["digest"] = digest

    timestamp = raw.get("timestamp")
    if type(timestamp) is not int or not 0 < timestamp < 2**64:
        raise NitroDocumentInvalid("malformed payload: timestamp must be a positive integer")
    fields["timestamp"] = timestamp

    pcrs = raw.get("pcrs")
    if not (isinstance(pcrs, Mapping) and 1 <= len(pcrs) <= MAX_PCRS):
        raise NitroDocumentInvalid(f"malformed payload: pcrs must be a map of 1 to {MAX_PCRS} entries")
    for index, value in pcrs.items():
        if type(index) is not int or not 0 <= index < MAX_PCRS:
            raise NitroDocumentInvalid(f"malformed payload: PCR index {_short(index)} out of range")
        if not (isinstance(value, bytes) and len(value) in PCR_LENGTHS):
            raise NitroDocumentInvalid(f"malformed payload: PCR{index} must be 32, 48 or 64 bytes")
    fields["pcrs"] = {int(i): bytes(v) for i, v in sorted(pcrs.items())}

    certificate = raw.get("certificate")
    if not (isinstance(certificate, bytes) and 1 <= len(certificate) <= MAX_CERTIFICATE_BYTES):
        raise NitroDocumentInvalid(f"malformed payload: certificate must be 1 to {MAX_CERTIFICATE_BYTES} bytes")
    fields["certificate"] = certificate

    cabundle = raw.get("cabundle")
    if not (isinstance(cabundle, (list, tuple)) and 1 <= len(cabundle) <= MAX_CABUNDLE):
        raise NitroDocumentInvalid(f"malformed payload: cabundle must be an array of 1 to {MAX_CABUNDLE} certificates")
    for i, der in enumerate(cabundle):
        if not (isinstance(der, bytes) and 1 <= len(der) <= MAX_CERTIFICATE_BYTES):
            raise NitroDocumentInvalid(f"malformed payload: cabundle[{i}] must be 1 to {MAX_CERTIFICATE_BYTES} bytes")
    fields["cabundle"] = list(cabundle)

    for name, limit in (("public_key", MAX_PUBLIC_KEY_BYTES), ("user_data", MAX_USER_DATA_BYTES), ("nonce", MAX_NONCE_BYTES)):
        value = raw.get(name)
        if value is not None and not (isinstance(value, bytes) and len(value) <= limit):
            raise NitroDocumentInvalid(f"malformed payload: {name} must be absent, null or at most {limit} bytes")
        fields[name] = value
    if fields["public_key"] == b"":
        raise NitroDocumentInvalid("malformed payload: public_key must not be empty")
    return fields


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------------------- steps 4-6

def _load_certificate(der: bytes, what: str) -> x509.Certificate:
    """Parse ``der`` and every field the checks read.

    ``cryptography`` parses names, times and extensions lazily, so a corrupt field would otherwise
    raise ``ValueError`` in the middle of a later check; touching them here keeps every decoding
    failure a :class:`NitroDocumentInvalid` (parsing is deterministic, so later reads succeed).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # cryptography warns on non-RFC 5280 encodings: refuse them
            cert = x509.load_der_x509_certificate(der)
            _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc)
            _ = (cert.signature_algorithm_oid, cert.extensions, cert.public_key())
        if cert.version is not x509.Version.v3:
            raise ValueError("not an X.509 v3 certificate")
    except Exception as e:  # ValueError for bad DER; keep any parser surprise inside the verdict
        raise NitroDocumentInvalid(f"malformed certificate {what}: {_first_line(e)}") from e
    return cert


def _first_line(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def _check_chain(chain: list[x509.Certificate], leaf: x509.Certificate) -> None:
    """Step 5: each link root -> intermediates -> leaf, and each issuer's CA constraints."""
    for i, cert in enumerate(chain):
        _check_p384(cert, "root certificate" if i == 0 else f"cabundle[{i}]")
    _check_p384(leaf, "leaf certificate")
    links = [*chain, leaf]
    for depth, (issuer, subject) in enumerate(itertools.pairwise(links), start=1):
        name = "leaf certificate" if subject is leaf else f"cabundle[{depth}]"
        _check_ca(issuer, name="root certificate" if depth == 1 else f"cabundle[{depth - 1}]",
                  cas_below=len(chain) - depth)
        if subject.issuer != issuer.subject:
            raise NitroDocumentInvalid(f"certificate chain broken: issuer of {name} is not the subject of its parent")
        if subject.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
            raise NitroDocumentInvalid(f"{name} is not signed with ECDSA-SHA384")
        try:
            subject.verify_directly_issued_by(issuer)
        except InvalidSignature as e:
            raise NitroDocumentInvalid(f"certificate signature invalid: {name}") from e
        except (ValueError, TypeError) as e:
            raise NitroDocumentInvalid(f"certificate chain broken at {name}: {e}") from e
    try:
        leaf_constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        leaf_is_ca = leaf_constraints.ca
    except x509.ExtensionNotFound:
        leaf_is_ca = False
    except Exception as e:  # duplicate or undecodable extensions
        raise NitroDocumentInvalid(f"malformed certificate leaf: {type(e).__name__}") from e
    if leaf_is_ca:
        raise NitroDocumentInvalid("leaf certificate must not be a CA")


def _check_ca(cert: x509.Certificate, *, name: str, cas_below: int) -> None:
    """An issuer must be a CA whose path length allows the CAs below it and may sign certificates."""
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound as e:
        raise NitroDocumentInvalid(f"{name} is not a CA (no basicConstraints)") from e
    except Exception as e:
        raise NitroDocumentInvalid(f"malformed certificate {name}: {type(e).__name__}") from e
    if not constraints.ca:
        raise NitroDocumentInvalid(f"{name} is not a CA (basicConstraints ca=false)")
    if constraints.path_length is not None and constraints.path_length < cas_below:
        raise NitroDocumentInvalid(f"{name} path length {constraints.path_length} is exceeded")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    except Exception as e:
        raise NitroDocumentInvalid(f"malformed certificate {name}: {type(e).__name__}") from e
    if not usage.key_cert_sign:
        raise NitroDocumentInvalid(f"{name} may not sign certificates (keyUsage)")


def _check_p384(cert: x509.Certificate, name: str) -> None:
    try:
        key = cert.public_key()
    except Exception as e:  # unsupported or malformed key
        raise NitroDocumentInvalid(f"malformed certificate {name}: unusable public key") from e
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)):
        raise NitroDocumentInvalid(f"{name} does not hold a P-384 key")


def _check_validity(certificates: list[x509.Certificate], at: float) -> tuple[int, int]:
    """Step 6: every certificate valid at ``at`` (inclusive); returns the chain's common window."""
    not_before = max(_unix(c.not_valid_before_utc) for c in certificates)
    not_after = min(_unix(c.not_valid_after_utc) for c in certificates)
    for cert in certificates:
        start, end = _unix(cert.not_valid_before_utc), _unix(cert.not_valid_after_utc)
        if not start <= at <= end:
            raise NitroDocumentInvalid(
                f"certificate not valid at T={_seconds(at)}: {_common_name(cert)} is valid "
                f"{cert.not_valid_before_utc.isoformat()}..{cert.not_valid_after_utc.isoformat()}"
            )
    return not_before, not_after


def _seconds(at: float) -> str:
    return str(int(at)) if float(at).is_integer() else f"{at:.3f}"


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


# ---------------------------------------------------------------------------------------- steps 7-8


def _check_cose_signature(leaf: x509.Certificate, protected: bytes, payload: bytes, signature: bytes) -> None:
    """Steps 7-8: ES384 over ``Sig_structure`` built from the original protected and payload bytes."""
    if len(signature) != SIGNATURE_BYTES:
        raise NitroDocumentInvalid(f"malformed signature: {len(signature)} bytes, expected {SIGNATURE_BYTES} (ES384 r || s)")
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    r = int.from_bytes(signature[:48], "big")
    s = int.from_bytes(signature[48:], "big")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):  # already checked by _check_p384; keeps mypy informed
        raise NitroDocumentInvalid("leaf certificate does not hold a P-384 key")
    try:
        key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as e:
        raise NitroDocumentInvalid("COSE signature invalid") from e
