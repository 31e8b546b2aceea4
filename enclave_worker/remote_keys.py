"""Clients of a ``sterling keymanager`` service's model-key and competition-key sides, with the
in-process services' interfaces.

:class:`RemoteModelKeys` does over HTTP what :class:`~.model_keys.ModelKeyService` does in process
(owners' model-key deposits, jobs' models taken for serving, releases to inference enclaves);
:class:`RemoteCompetitionKeys` does what :class:`~.competition_keys.CompetitionKeyService` does
(test-set deposits, admissions, releases to evaluators and buyers). Both return the in-process
services' result types and raise their exceptions with their messages (:data:`.remote.REFUSALS`);
a key manager started without the model market (or the competition market) answers 404
:class:`~.remote.NotServed`, and a client refuses to be made for it.

:class:`ModelKeyHost` and :class:`CompetitionKeyHost` are what the gateway, the inference host and
the evaluator host hold: either service, in process or across the network. As in
:mod:`.remote`, nothing retries a request: a release is a logged decision, taken once.

Example:
    >>> keys = RemoteModelKeys("http://km.internal:8100")  # doctest: +SKIP
    >>> host = InferenceService(enclave, model_market=market, registry=registry, key_manager=keys, ...)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from eth_utils import to_checksum_address

from marketplace.competing import AdmittedSubmission, CompetitionKeyDepository, TestSetDeposit
from marketplace.serving import JobModel, JobModelCopyDepository, JobModelDepository

from .competition_keys import EvaluationKeys
from .remote import DEFAULT_TIMEOUT, KeyManagerClient, NotServed, ServiceFailed, from_hex, to_hex
from .trusted.onchain import Split

if TYPE_CHECKING:
    from .competition_keys import CompetitionKeyService
    from .evaluator import EvaluationKeySource
    from .model_keys import ModelKeyService
    from .serving import ModelReleaser

T = TypeVar("T")


@runtime_checkable
class ModelKeyHost(JobModelDepository, JobModelCopyDepository, Protocol):
    """The key manager's model-key side: in process (:class:`~.model_keys.ModelKeyService`) or
    across the network (:class:`RemoteModelKeys`)."""

    def release(self, *, model_id: int, enclave: str) -> bytes:
        """Listed model ``model_id``'s key, re-wrapped to inference enclave ``enclave``'s on-chain key.

        Raises:
            KeyReleaseRefused: no deposit by the listing's owner, the model is not active or has
                expired, or ``enclave`` is not an active inference enclave.
        """
        ...


@runtime_checkable
class CompetitionKeyHost(CompetitionKeyDepository, Protocol):
    """The key manager's competition side: in process (:class:`~.competition_keys.CompetitionKeyService`)
    or across the network (:class:`RemoteCompetitionKeys`)."""

    def release_evaluation(self, competition_id: int, index: int, split: Split, *, evaluator: str) -> EvaluationKeys:
        """The test set's and submission ``index``'s keys, wrapped to ``evaluator`` for one scoring.

        Raises:
            KeyReleaseRefused: not the next scoring due, scored already, not an active evaluator, no deposit.
        """
        ...


class _RemoteSide(KeyManagerClient):
    """One side of a key-manager service: its client, the key manager's signer and the market it serves."""

    _side: str
    """The ``/info`` field naming the side's market (``None`` there: the side is not served)."""
    _what: str

    def _read_info(self, info: dict[str, Any]) -> None:
        market = info[self._side]
        if market is None:
            raise NotServed(f"the key manager at {self.url} serves no {self._what}")
        self._market = str(to_checksum_address(market))

    def _post(self, path: str, body: dict[str, Any], read: Callable[[dict[str, Any]], T]) -> T:
        """``POST path`` and read its answer with ``read``.

        Raises:
            ServiceFailed: the answer does not have the fields ``read`` takes.
            NotServed, KeyReleaseRefused, ...: the refusal the service answered.
        """
        answer = self._client.call("POST", path, body)
        try:
            return read(answer)
        except (KeyError, TypeError, ValueError) as e:
            raise ServiceFailed(f"the key manager at {self.url} answered POST {path} out of protocol: {e!r}") from e


class RemoteModelKeys(_RemoteSide):
    """A ``sterling keymanager`` service's model-key side (:class:`ModelKeyHost`): the gateway's
    model deposits and an inference host's releases (:class:`~.serving.ModelReleaser`).

    Example:
        >>> with RemoteModelKeys("http://127.0.0.1:8100") as keys:  # doctest: +SKIP
        ...     released = keys.release(model_id=3, enclave=inference.signer)
    """

    _side, _what = "model_market", "model market"

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect to the service at ``url`` (``GET /info``).

        Raises:
            ServiceUnreachable: nothing answers at ``url``.
            ServiceFailed: what answers is not a key-manager service.
            NotServed: the key manager serves no model market.
        """
        super().__init__(url, timeout=timeout)

    @property
    def model_market(self) -> str:
        """The address of the model market the service serves (EIP-55)."""
        return self._market

    def deposit(self, content_hash: bytes, wrapped_key: bytes, *, owner: str, signature: bytes) -> None:
        """``POST /model-deposits``: :meth:`~.model_keys.ModelKeyService.deposit` at the service.

        Raises:
            DepositSignatureInvalid, DepositExists, KeyUnwrapFailed: as the in-process service.
            ServiceRequestInvalid: sizes the service does not take.
            ServiceUnreachable, ServiceFailed, NotServed: the request did not get a decision.
        """
        body = {"content_hash": to_hex(content_hash), "wrapped_key": to_hex(wrapped_key), "owner": owner, "signature": to_hex(signature)}
        self._client.call("POST", "/model-deposits", body)

    def deposit_from_job(self, job_id: int) -> JobModel:
        """``POST /job-models``: :meth:`~.model_keys.ModelKeyService.deposit_from_job` at the service.

        Raises:
            JobNotReady, DepositExists, KeyReleaseRefused: as the in-process service.
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid, NotServed: the request did not get a decision.
        """
        return self._post("/job-models", {"job_id": job_id}, _job_model)

    def deposit_job_model_copy(self, job_id: int, content_hash: bytes, wrapped_key: bytes, *, signature: bytes) -> JobModel:
        """``POST /job-models`` with a ``copy``: :meth:`~.model_keys.ModelKeyService.deposit_job_model_copy` at the service.

        Raises:
            JobNotReady, DepositSignatureInvalid, DepositExists, KeyReleaseRefused: as the in-process service.
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid, NotServed: the request did not get a decision.
        """
        copy = {"content_hash": to_hex(content_hash), "wrapped_key": to_hex(wrapped_key), "signature": to_hex(signature)}
        return self._post("/job-models", {"job_id": job_id, "copy": copy}, _job_model)

    def release(self, *, model_id: int, enclave: str) -> bytes:
        """``POST /model-releases``: :meth:`~.model_keys.ModelKeyService.release` at the service.

        Raises:
            KeyReleaseRefused: as the in-process service (the message is the service's).
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid, NotServed: the request did not get a decision.
        """
        return self._post("/model-releases", {"model_id": model_id, "enclave": enclave}, _released_key)


class RemoteCompetitionKeys(_RemoteSide):
    """A ``sterling keymanager`` service's competition side (:class:`CompetitionKeyHost`): organizers'
    and participants' deposits, an evaluator host's releases (:class:`~.evaluator.EvaluationKeySource`)
    and buyers' keys.

    Example:
        >>> with RemoteCompetitionKeys("http://127.0.0.1:8100") as keys:  # doctest: +SKIP
        ...     evaluator = EvaluatorService(enclave, competitions=market, registry=registry, keys=keys, blobs=blobs, operator=operator)
    """

    _side, _what = "competitions", "competition market"

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Connect to the service at ``url`` (``GET /info``).

        Raises:
            ServiceUnreachable: nothing answers at ``url``.
            ServiceFailed: what answers is not a key-manager service.
            NotServed: the key manager serves no competition market.
        """
        super().__init__(url, timeout=timeout)

    @property
    def competitions(self) -> str:
        """The address of the competition market the service serves (EIP-55)."""
        return self._market

    def deposit_test_set(self, content_hash: bytes, wrapped_key: bytes, *, organizer: str, signature: bytes) -> TestSetDeposit:
        """``POST /test-set-deposits``: :meth:`~.competition_keys.CompetitionKeyService.deposit_test_set` at the service.

        Raises:
            DepositSignatureInvalid, DepositExists, KeyUnwrapFailed: as the in-process service.
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid, NotServed: the request did not get a decision.
        """
        body = {
            "content_hash": to_hex(content_hash), "wrapped_key": to_hex(wrapped_key), "organizer": organizer,
            "signature": to_hex(signature),
        }  # fmt: skip
        return self._post("/test-set-deposits", body, _test_set)

    def admit(
        self, competition_id: int, content_hash: bytes, wrapped_key: bytes, *, participant: str, signature: bytes
    ) -> AdmittedSubmission:
        """``POST /admissions``: :meth:`~.competition_keys.CompetitionKeyService.admit` at the service
        (a repeat for the same competition returns the same admission).

        Raises:
            DepositSignatureInvalid, DepositExists, SubmissionRefused, KeyUnwrapFailed: as the in-process service.
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid, NotServed: the request did not get a decision.
        """
        body = {
            "competition_id": competition_id, "content_hash": to_hex(content_hash), "wrapped_key": to_hex(wrapped_key),
            "participant": participant, "signature": to_hex(signature),
        }  # fmt: skip
        return self._post("/admissions", body, _admitted)

    def admit_job_model(self, competition_id: int, job_id: int) -> AdmittedSubmission:
        """``POST /job-admissions``: :meth:`~.competition_keys.CompetitionKeyService.admit_job_model` at the service.

        Raises:
            JobNotReady, DepositExists, SubmissionRefused: as the in-process service.
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid, NotServed: the request did not get a decision.
        """
        return self._post("/job-admissions", {"competition_id": competition_id, "job_id": job_id}, _admitted)

    def release_evaluation(self, competition_id: int, index: int, split: Split, *, evaluator: str) -> EvaluationKeys:
        """``POST /evaluation-releases``: :meth:`~.competition_keys.CompetitionKeyService.release_evaluation` at the service.

        Raises:
            KeyReleaseRefused: as the in-process service.
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid, NotServed: the request did not get a decision.
        """
        body = {"competition_id": competition_id, "index": index, "split": Split(split).name.lower(), "evaluator": evaluator}
        return self._post("/evaluation-releases", body, _evaluation_keys)

    def release_purchase(self, competition_id: int, index: int, *, buyer: str) -> bytes:
        """``POST /purchase-releases``: :meth:`~.competition_keys.CompetitionKeyService.release_purchase` at the service.

        Raises:
            KeyReleaseRefused: as the in-process service.
            ServiceUnreachable, ServiceFailed, ServiceRequestInvalid, NotServed: the request did not get a decision.
        """
        body = {"competition_id": competition_id, "index": index, "buyer": buyer}
        return self._post("/purchase-releases", body, _released_key)


def _released_key(answer: dict[str, Any]) -> bytes:
    return from_hex(str(answer["released_key"]))


def _test_set(answer: dict[str, Any]) -> TestSetDeposit:
    return TestSetDeposit(
        content_hash=from_hex(str(answer["content_hash"])), schema_hash=from_hex(str(answer["schema_hash"])), rows=int(answer["rows"])
    )


def _evaluation_keys(answer: dict[str, Any]) -> EvaluationKeys:
    return EvaluationKeys(
        test_set_key=from_hex(str(answer["test_set_key"])), submission_key=from_hex(str(answer["submission_key"])),
        previous_best=int(answer["previous_best"]),
    )  # fmt: skip


def _job_model(answer: dict[str, Any]) -> JobModel:
    return JobModel(
        job_id=int(answer["job_id"]), content_hash=from_hex(str(answer["content_hash"])),
        weights_hash=from_hex(str(answer["weights_hash"])), owner=str(to_checksum_address(answer["owner"])),
    )  # fmt: skip


def _admitted(answer: dict[str, Any]) -> AdmittedSubmission:
    return AdmittedSubmission(
        competition_id=int(answer["competition_id"]), participant=str(to_checksum_address(answer["participant"])),
        content_hash=from_hex(str(answer["content_hash"])), weights_hash=from_hex(str(answer["weights_hash"])),
        admission=from_hex(str(answer["admission"])),
    )  # fmt: skip


if TYPE_CHECKING:  # both sides give the gateway, the inference host and the evaluator host what they need (checked by mypy)

    def _in_process(models: ModelKeyService, competitions: CompetitionKeyService) -> tuple[
        ModelKeyHost, ModelReleaser, CompetitionKeyHost, EvaluationKeySource
    ]:  # fmt: skip
        return models, models, competitions, competitions

    def _remote(models: RemoteModelKeys, competitions: RemoteCompetitionKeys) -> tuple[
        ModelKeyHost, ModelReleaser, CompetitionKeyHost, EvaluationKeySource
    ]:  # fmt: skip
        return models, models, competitions, competitions
