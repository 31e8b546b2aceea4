"""Clients of a key manager and an attestation verifier that run as a service of their own
(``sterling keymanager``, ``docs/operations.md``), with the in-process services' interfaces.

:class:`RemoteKeyManager` does over HTTP what :class:`~enclave_worker.keymanager.KeyManagerService`
does in process for a trainer worker (:class:`KeyReleaser`) and for a provider's deposit
(:class:`~marketplace.provider.KeyDepository`); :class:`RemoteVerifier` does what
:class:`~oracle.verifier.AttestationVerifier` does for an enclave's registration. A refusal raises
the exception the in-process service raises, with its message: the service answers it as
``{"error": <class name>, "detail": <message>}`` with the status of :data:`REFUSALS`, the one table
both sides read. The key manager's model-key and competition sides have their clients in
:mod:`.remote_keys`.

Bytes travel as ``0x`` hex in JSON. Nothing here retries a request: a release or a claim-release
statement is a decision the key manager logs and takes once, so a request whose answer was lost
is not sent again (a release asked again is refused: one claim, one key).

Example:
    >>> key_manager = RemoteKeyManager("http://km.internal:8100")  # doctest: +SKIP
    >>> worker = TrainerWorker(enclave, operator=operator, market=market, key_manager=key_manager, blobs=blobs)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

import httpx
from eth_utils import to_checksum_address

from marketplace.contracts import Certificate
from marketplace.errors import (
    AttestationRejected,
    ChainUnavailable,
    ContractReverted,
    JobNotReady,
    KeyReleaseRefused,
    KeyUnwrapFailed,
    SterlingError,
)

from .keymanager import JobKey
from .trusted.errors import SubmissionRefused
from .trusted.onchain import Role
from .trusted.receipt import DepositExists, DepositSignatureInvalid

if TYPE_CHECKING:
    from marketplace.provider import KeyDepository

    from .keymanager import KeyManagerService

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
"""Seconds a request may take (a release waits for the chain reads and the enclave)."""


@runtime_checkable
class KeyReleaser(Protocol):
    """What a trainer worker needs of a key manager: in process (:class:`~enclave_worker.keymanager.KeyManagerService`)
    or across the network (:class:`RemoteKeyManager`)."""

    @property
    def signer(self) -> str:
        """The key manager enclave's address (EIP-55)."""
        ...

    @property
    def confirmations(self) -> int:
        """Blocks a claim must have on top of it before a key is released for it."""
        ...

    def release(self, *, job_id: int, dataset_id: int, trainer: str, job_key: JobKey) -> bytes:
        """A dataset's key re-wrapped to ``trainer``'s per-job key, once per claim.

        Raises:
            KeyReleaseRefused: the chain or the key manager's log does not allow it (the message says which check).
        """
        ...

    def claim_release_statement(self, job_id: int, *, abandoned: bytes = b"") -> bytes:
        """The key manager's 65-byte ``ClaimRelease`` signature for the job's current claim.

        Raises:
            KeyReleaseRefused: the job is not Claimed, or a key was released under the claim.
        """
        ...


class Certifier(Protocol):
    """What registering an enclave needs of an attestation verifier: in process
    (:class:`~oracle.verifier.AttestationVerifier`) or across the network (:class:`RemoteVerifier`)."""

    def challenge(self) -> bytes:
        """A fresh single-use nonce for the enclave's attestation."""
        ...

    def certify(self, *, evidence: bytes, claims: dict[str, Any], operator: str) -> tuple[Certificate, bytes]:
        """The certificate for the enclave ``claims`` names and the verifier's signature over it.

        Raises:
            AttestationRejected: the evidence, the nonce or the measurement is refused.
        """
        ...


class ServiceUnreachable(SterlingError, ConnectionError):
    """A Sterling service (the key manager, the attestation verifier) did not answer at its URL."""


class ServiceFailed(SterlingError):
    """A Sterling service answered with a server error or out of its protocol (not a refusal)."""


class ServiceRequestInvalid(SterlingError, ValueError):
    """A Sterling service refused a request as malformed (bad hex, wrong sizes): nothing was done."""


class NotServed(SterlingError, LookupError):
    """A Sterling service does not serve what was asked: a key manager started without a model
    market or a competition market has no model-key or competition-key side."""


REFUSALS: tuple[tuple[type[SterlingError], int], ...] = (
    (DepositExists, 409),
    (DepositSignatureInvalid, 400),
    (KeyUnwrapFailed, 400),
    (KeyReleaseRefused, 403),
    (SubmissionRefused, 403),
    (JobNotReady, 409),
    (AttestationRejected, 403),
    (NotServed, 404),
    (ContractReverted, 400),
    (ChainUnavailable, 503),
)
"""The errors the key-manager service answers as refusals, with their HTTP status; the service
names the first family an error belongs to (specific before general) and the client raises that
class again. Any other error is the service's fault (500)."""
_REFUSAL_BY_NAME: dict[str, type[SterlingError]] = {family.__name__: family for family, _ in REFUSALS}
REQUEST_INVALID = "RequestInvalid"
"""The ``error`` of a request the service refused as malformed (status 422)."""


def refusal_of(error: BaseException) -> tuple[type[SterlingError], int] | None:
    """The :data:`REFUSALS` family ``error`` belongs to and its HTTP status (``None``: not a refusal)."""
    for family, status in REFUSALS:
        if isinstance(error, family):
            return family, status
    return None


def to_hex(value: bytes) -> str:
    return "0x" + value.hex()


def from_hex(value: str) -> bytes:
    """``0x`` hex (the prefix optional) as bytes.

    Raises:
        ValueError: not hex of whole bytes.
    """
    return bytes.fromhex(value.removeprefix("0x"))


def encode_claims(claims: Mapping[str, Any]) -> dict[str, int | str]:
    """An enclave's ``attest`` claims as JSON: integers stay integers, bytes become ``0x`` hex.

    Raises:
        TypeError: a value is neither (claims hold nothing else: role, signer, keys, nonce, report data).
    """
    encoded: dict[str, int | str] = {}
    for name, value in claims.items():
        if isinstance(value, bool) or not isinstance(value, int | bytes | bytearray):
            raise TypeError(f"claim {name!r} is a {type(value).__name__}: only integers and bytes travel")
        encoded[name] = int(value) if isinstance(value, int) else to_hex(bytes(value))
    return encoded


def decode_claims(claims: Mapping[str, int | str]) -> dict[str, Any]:
    """:func:`encode_claims` undone: ``0x`` hex strings become bytes again."""
    return {name: value if isinstance(value, int) else from_hex(value) for name, value in claims.items()}


def certificate_json(certificate: Certificate) -> dict[str, int | str]:
    return {
        "role": int(certificate.role),
        "measurement": to_hex(certificate.measurement),
        "signer": certificate.signer,
        "encryption_key": to_hex(certificate.encryption_key),
        "operator": certificate.operator,
        "valid_until": certificate.valid_until,
    }


class _ServiceClient:
    """One HTTP connection pool to a service at ``url``, with its answers mapped to Sterling's errors."""

    def __init__(self, url: str, *, timeout: float, what: str) -> None:
        self.url = url.rstrip("/")
        self._what = what
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request and return its JSON answer.

        Raises:
            ServiceUnreachable: no answer from the URL (refused connection, timeout, dropped connection).
            ServiceRequestInvalid: the service refused the request as malformed (422).
            ServiceFailed: a server error, or an answer out of protocol.
            KeyReleaseRefused, DepositExists, ...: the refusal the service answered (:data:`REFUSALS`).
        """
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as e:
            raise ServiceUnreachable(f"the {self._what} at {self.url} did not answer {method} {path}: {type(e).__name__}: {e}") from e
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ServiceFailed(f"the {self._what} at {self.url} answered {method} {path}: HTTP {response.status_code}, no JSON object")
        if response.is_success:
            return answer
        raise _error_of(answer, response.status_code, where=f"the {self._what} at {self.url}, {method} {path}")


def _error_of(answer: dict[str, Any], status: int, *, where: str) -> SterlingError:
    """The exception a service's error answer stands for."""
    name, detail = answer.get("error"), str(answer.get("detail", ""))
    family = _REFUSAL_BY_NAME.get(name) if isinstance(name, str) else None
    if family is ContractReverted:
        revert = answer.get("revert")
        revert = revert if isinstance(revert, dict) else {}
        args = revert.get("args")
        return ContractReverted(
            str(revert.get("error", "")), tuple(args) if isinstance(args, list) else (), function=str(revert.get("function", ""))
        )
    if family is not None:
        return family(detail)
    if name == REQUEST_INVALID or status == 422:
        return ServiceRequestInvalid(f"{where} refused the request as malformed: {detail}")
    return ServiceFailed(f"{where} failed with HTTP {status}: {name}: {detail}")


class KeyManagerClient:
    """A client of a ``sterling keymanager`` service: its URL and its signer, read once from
    ``GET /info`` when the client is made (:meth:`_read_info` takes what a subclass needs besides).
    A restarted service runs a new enclave with a new signer: make a new client then."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect to the service at ``url`` and read its signer (``GET /info``).

        Raises:
            ServiceUnreachable: nothing answers at ``url``.
            ServiceFailed: what answers is not a key-manager service.
        """
        self._client = _ServiceClient(url, timeout=timeout, what="key manager")
        try:
            info = self._client.call("GET", "/info")
            self._signer = str(to_checksum_address(info["signer"]))
            self._read_info(info)
        except (KeyError, TypeError, ValueError) as e:
            self._client.close()
            raise ServiceFailed(f"the key manager at {self.url} answered GET /info out of protocol: {e!r}") from e
        except BaseException:
            self._client.close()
            raise

    def _read_info(self, info: dict[str, Any]) -> None:
        """Take what this client needs of the service's ``/info`` besides its signer (raise ``KeyError`` if missing)."""

    @property
    def url(self) -> str:
        return self._client.url

    @property
    def signer(self) -> str:
        """The key manager enclave's address (EIP-55), as the service said when this client was made."""
        return self._signer

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class RemoteKeyManager(KeyManagerClient):
    """A ``sterling keymanager`` service, used as a trainer worker's key manager (:class:`KeyReleaser`)
    and as the gateway's key depository (:class:`~marketplace.provider.KeyDepository`).

    The key manager's signer and confirmations are read once, when the client is made: a
    restarted service runs a new enclave with a new signer, so make a new client then.

    Example:
        >>> with RemoteKeyManager("http://127.0.0.1:8100") as km:  # doctest: +SKIP
        ...     wrapped = km.release(job_id=7, dataset_id=3, trainer=worker.signer, job_key=worker.prepare_job(7))
    """

    def _read_info(self, info: dict[str, Any]) -> None:
        self._confirmations = int(info["confirmations"])

    @property
    def confirmations(self) -> int:
        """Blocks a claim must have on top of it before the service releases a key for it."""
        return self._confirmations

    def release(self, *, job_id: int, dataset_id: int, trainer: str, job_key: JobKey) -> bytes:
        """``POST /releases``: :meth:`~enclave_worker.keymanager.KeyManagerService.release` at the service.

        Raises:
            KeyReleaseRefused: as the in-process service (the message is the service's).
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid: the request did not get a decision.
        """
        answer = self._client.call(
            "POST", "/releases",
            {
                "job_id": job_id, "dataset_id": dataset_id, "trainer": trainer,
                "job_key": {"public_key": to_hex(job_key.public_key), "signature": to_hex(job_key.signature)},
            },
        )  # fmt: skip
        return self._bytes(answer, "released_key", "/releases")

    def claim_release_statement(self, job_id: int, *, abandoned: bytes = b"") -> bytes:
        """``POST /claim-releases``: :meth:`~enclave_worker.keymanager.KeyManagerService.claim_release_statement` at the service.

        Raises:
            KeyReleaseRefused: as the in-process service.
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid: the request did not get a decision.
        """
        answer = self._client.call("POST", "/claim-releases", {"job_id": job_id, "abandoned": to_hex(abandoned)})
        return self._bytes(answer, "signature", "/claim-releases")

    def deposit(self, content_hash: bytes, wrapped_key: bytes, *, provider: str, signature: bytes) -> None:
        """``POST /deposits``: :meth:`~enclave_worker.keymanager.KeyManagerService.deposit` at the service.

        Raises:
            DepositSignatureInvalid, DepositExists, KeyUnwrapFailed: as the in-process service.
            ServiceRequestInvalid: sizes the service does not take (a content hash of other than 32
                bytes, a signature of other than 65, an empty or oversized wrapped key).
            ServiceUnreachable, ServiceFailed: the request did not get a decision.
        """
        body = {"content_hash": to_hex(content_hash), "wrapped_key": to_hex(wrapped_key), "provider": provider}
        self._client.call("POST", "/deposits", body | {"signature": to_hex(signature)})

    def _bytes(self, answer: dict[str, Any], field: str, path: str) -> bytes:
        try:
            return from_hex(str(answer[field]))
        except (KeyError, ValueError) as e:
            raise ServiceFailed(f"the key manager at {self.url} answered POST {path} without {field} as hex") from e



class RemoteVerifier:
    """The attestation verifier of a ``sterling keymanager`` service, with
    :class:`~oracle.verifier.AttestationVerifier`'s ``challenge`` and ``certify`` (``sim`` evidence).

    Example:
        >>> verifier = RemoteVerifier("http://127.0.0.1:8100")  # doctest: +SKIP
        >>> claims, evidence = enclave.attest(verifier.challenge())  # doctest: +SKIP
        >>> registry.register(operator, *verifier.certify(evidence=evidence, claims=claims, operator=operator.address))  # doctest: +SKIP
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._client = _ServiceClient(url, timeout=timeout, what="attestation verifier")

    @property
    def url(self) -> str:
        return self._client.url

    def challenge(self) -> bytes:
        """``POST /attestation/challenge``: a fresh single-use nonce, valid for five minutes.

        Raises:
            ServiceUnreachable, ServiceFailed: no nonce was issued.
        """
        answer = self._client.call("POST", "/attestation/challenge")
        try:
            return from_hex(str(answer["nonce"]))
        except (KeyError, ValueError) as e:
            raise ServiceFailed(f"the attestation verifier at {self.url} answered a challenge without a hex nonce") from e

    def certify(self, *, evidence: bytes, claims: dict[str, Any], operator: str) -> tuple[Certificate, bytes]:
        """``POST /attestation/certify``: the enclave's registration certificate and the verifier's signature.

        Raises:
            AttestationRejected: as :meth:`~oracle.verifier.AttestationVerifier.certify` (the message says which check).
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid: no decision was made.
        """
        answer = self._client.call(
            "POST", "/attestation/certify", {"evidence": to_hex(evidence), "claims": encode_claims(claims), "operator": operator}
        )
        try:
            c = answer["certificate"]
            certificate = Certificate(
                role=Role(int(c["role"])),
                measurement=from_hex(c["measurement"]),
                signer=str(to_checksum_address(c["signer"])),
                encryption_key=from_hex(c["encryption_key"]),
                operator=str(to_checksum_address(c["operator"])),
                valid_until=int(c["valid_until"]),
            )
            return certificate, from_hex(str(answer["signature"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ServiceFailed(f"the attestation verifier at {self.url} answered a certification out of protocol: {e!r}") from e

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteVerifier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


if TYPE_CHECKING:  # both key managers give a trainer worker and a deposit what they need (checked by mypy)

    def _in_process(service: KeyManagerService) -> tuple[KeyReleaser, KeyDepository]:
        return service, service

    def _remote(client: RemoteKeyManager) -> tuple[KeyReleaser, KeyDepository]:
        return client, client
