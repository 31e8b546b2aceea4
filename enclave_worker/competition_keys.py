"""Host side of the key manager for competitions: test-set and submission deposits, releases to
evaluator enclaves for one scoring each, and releases to buyers.

An organizer encrypts its test set like a dataset (STRL, a fresh key), stores the ciphertext in
the blob store, wraps the key to the key manager's attested key with
:func:`~.trusted.keywrap.test_set_info` and signs an EIP-712 ``Deposit`` under the **competition
market's** domain. The trusted part opens the test set (so a competition never names one that
does not open), and seals the key with the organizer and the test set's schema hash; the host keeps
it at ``competition-deposits/test-sets/<content hash>/<organizer>.sealed``.

A participant does the same with its model (wrapped with :func:`~.trusted.keywrap.submission_info`,
bound to the competition and the participant). The trusted part checks it against the
competition's rules and signs an ``Admission`` the participant submits on-chain; the sealed key
is kept at ``competition-deposits/submissions/<content hash>/<participant>.sealed``.

Every key goes out for one purpose: to an active evaluator for one scoring (a submission, a
split and the leaderboard best), or to a buyer the chain shows paid. Every decision goes to the key
manager's hash-chained audit log (kinds in :data:`~.audit.COMPETITION_KINDS`), under its lock.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import to_canonical_address, to_checksum_address

from marketplace.blobstore import BlobStore
from marketplace.competing import AdmittedSubmission, TestSetDeposit
from marketplace.competitions import CompetitionMarketClient, CompetitionRecord, SubmissionRecord
from marketplace.contracts import JobStatus
from marketplace.errors import JobNotReady, KeyReleaseRefused, KeyUnwrapFailed

from .audit import COMPETITION_DEPOSIT, COMPETITION_DEPOSIT_REFUSED, COMPETITION_RELEASE
from .host import EnclaveRequestFailed
from .keymanager import MAX_WRAPPED_KEY_BYTES, SIGNATURE_BYTES, KeyManagerService, _write_new, unconfirmed_message
from .trusted.errors import SubmissionRefused
from .trusted.onchain import Role, Split
from .trusted.receipt import DepositExists, DepositRefused, DepositSignatureInvalid

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationKeys:
    """The two keys of one scoring, wrapped to the evaluator, and the best they are bound to."""

    test_set_key: bytes
    submission_key: bytes
    previous_best: int


def rules_fields(competition_id: int, record: CompetitionRecord) -> dict[str, Any]:
    """A competition's scoring rules as the trusted part's requests carry them (``protocol.RULES``)."""
    t = record.terms
    return {
        "competition_id": competition_id,
        "test_set_hash": t.test_set_hash,
        "schema_hash": t.schema_hash,
        "metric": int(t.metric),
        "public_split_bps": t.public_split_bps,
        "ladder_step": t.ladder_step,
        "max_parameters": t.max_parameters,
        "architectures": int(t.architectures),
    }


class CompetitionKeyService:
    """Competition deposits and releases, through a key manager's trusted part (shares its lock and audit log)."""

    def __init__(self, key_manager: KeyManagerService, competitions: CompetitionMarketClient, *, blobs: BlobStore) -> None:
        self.key_manager = key_manager
        self.competitions = competitions
        self.blobs = blobs
        self._test_sets = key_manager.state_dir / "competition-deposits" / "test-sets"
        self._submissions = key_manager.state_dir / "competition-deposits" / "submissions"
        self._test_sets.mkdir(parents=True, exist_ok=True)
        self._submissions.mkdir(parents=True, exist_ok=True)

    @property
    def signer(self) -> str:
        return self.key_manager.signer

    def test_set_path(self, content_hash: bytes, organizer: str) -> Path:
        return self._test_sets / content_hash.hex() / f"{to_checksum_address(organizer)}.sealed"

    def submission_path(self, content_hash: bytes, participant: str) -> Path:
        return self._submissions / content_hash.hex() / f"{to_checksum_address(participant)}.sealed"

    def _request(self, op: str, refused: type[Exception], **fields: Any) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = self.key_manager.enclave.process.request(op, **fields)
        except EnclaveRequestFailed as e:
            if e.error == DepositSignatureInvalid.__name__:
                raise DepositSignatureInvalid(e.message) from e
            if e.error == KeyUnwrapFailed.__name__:  # a key wrapped for someone or something else
                raise KeyUnwrapFailed(e.message) from e
            raise refused(e.message) from e
        return reply

    @staticmethod
    def _check_sizes(content_hash: bytes, wrapped_key: bytes, signature: bytes) -> None:
        if len(content_hash) != 32 or len(wrapped_key) > MAX_WRAPPED_KEY_BYTES:
            raise KeyUnwrapFailed("a deposit needs a 32-byte content hash and a wrapped key of at most 512 bytes")
        if len(signature) != SIGNATURE_BYTES:
            raise DepositSignatureInvalid(f"the deposit signature must be {SIGNATURE_BYTES} bytes, got {len(signature)}")

    def deposit_test_set(self, content_hash: bytes, wrapped_key: bytes, *, organizer: str, signature: bytes) -> TestSetDeposit:
        """Accept ``organizer``'s test-set key for the ciphertext ``content_hash`` (already in the blob store).

        Raises:
            DepositSignatureInvalid: not ``organizer``'s deposit for this chain, competition market and key manager.
            DepositExists: ``organizer`` deposited this test set already (the key is kept).
            KeyUnwrapFailed: the ciphertext is not in the blob store, the key does not open it, or
                it is not a valid dataset package.
        """
        km = self.key_manager
        with km.lock:
            try:
                organizer = _address(organizer, "organizer")
                self._check_sizes(content_hash, wrapped_key, signature)
                if not self.blobs.has(content_hash.hex()):
                    raise KeyUnwrapFailed(f"no test set {content_hash.hex()} in the blob store: upload the ciphertext first")
                target = self.test_set_path(content_hash, organizer)
                if target.exists():
                    raise DepositExists(f"organizer {organizer} already deposited the key of test set {content_hash.hex()}")
                reply = self._request(
                    "deposit_test_set", KeyUnwrapFailed, chain_id=self.competitions.chain.chain_id,
                    competitions=self.competitions.address_bytes, organizer=to_canonical_address(organizer),
                    wrapped_key=wrapped_key, signature=signature, ciphertext=self.blobs.get(content_hash.hex()),
                )  # fmt: skip
                try:
                    _write_new(target, reply["sealed_key"])
                except FileExistsError as e:
                    raise DepositExists(f"organizer {organizer} already deposited the key of test set {content_hash.hex()}") from e
            except (DepositRefused, KeyUnwrapFailed) as e:
                self._audit(0, 0, content_hash, "", False, str(e), COMPETITION_DEPOSIT_REFUSED, provider=organizer)
                raise
            self._audit(
                0, 0, content_hash, "", False, "test set signed by its organizer; opened and sealed with its schema",
                COMPETITION_DEPOSIT, provider=organizer,
            )  # fmt: skip
        logger.info("deposited the key of test set %s by %s (%d rows)", content_hash.hex(), organizer, reply["rows"])
        return TestSetDeposit(content_hash=content_hash, schema_hash=reply["schema_hash"], rows=int(reply["rows"]))

    def admit(
        self, competition_id: int, content_hash: bytes, wrapped_key: bytes, *, participant: str, signature: bytes
    ) -> AdmittedSubmission:
        """Open ``participant``'s sealed model (already in the blob store), check it against
        competition ``competition_id``'s rules and sign its admission.

        Raises:
            DepositSignatureInvalid: not ``participant``'s deposit for this chain, competition market and key manager.
            DepositExists: ``participant`` had this model admitted to another competition (a repeat
                for the same competition returns the same admission).
            SubmissionRefused: the competition is not open, its window closed, the key does not
                open under this participant and competition, or the model breaks the rules.
        """
        km = self.key_manager
        with km.lock:
            try:
                participant = _address(participant, "participant")
                self._check_sizes(content_hash, wrapped_key, signature)
                if not self.blobs.has(content_hash.hex()):
                    raise SubmissionRefused(f"no model ciphertext {content_hash.hex()} in the blob store: upload it first")
                target = self.submission_path(content_hash, participant)
                if target.exists():
                    return self._admitted_before(target, competition_id, f"{participant}'s model {content_hash.hex()}")
                record = self.competitions.competition(competition_id)
                reply = self._request(
                    "admit_submission", SubmissionRefused, chain_id=self.competitions.chain.chain_id,
                    competitions=self.competitions.address_bytes, **rules_fields(competition_id, record),
                    competition_status=int(record.status), closes_at=record.terms.closes_at, now=self.competitions.chain.now(),
                    participant=to_canonical_address(participant), ciphertext=self.blobs.get(content_hash.hex()),
                    wrapped_key=wrapped_key, signature=signature,
                )  # fmt: skip
                admitted = AdmittedSubmission(
                    competition_id=competition_id, participant=participant, content_hash=content_hash,
                    weights_hash=reply["weights_hash"], admission=reply["admission"],
                )  # fmt: skip
                self._keep(target, reply["sealed_key"], admitted, f"{participant}'s model {content_hash.hex()}")
            except (DepositRefused, SubmissionRefused, KeyUnwrapFailed) as e:
                self._audit(0, competition_id, content_hash, "", False, str(e), COMPETITION_DEPOSIT_REFUSED, provider=participant)
                raise
            self._audit(
                0, competition_id, content_hash, "", False, "a model signed by its participant, opened and checked against the rules",
                COMPETITION_DEPOSIT, provider=participant,
            )  # fmt: skip
        logger.info("admitted %s's model %s to competition %d", participant, content_hash.hex(), competition_id)
        return admitted

    def admit_job_model(self, competition_id: int, job_id: int) -> AdmittedSubmission:
        """Admit the model of completed job ``job_id``, which its consumer had sealed to this key
        manager, as the consumer's submission to ``competition_id``: nobody, the participant
        included, ever holds its weights. The model's ciphertext goes to the blob store.

        Raises:
            JobNotReady: the job has not completed.
            DepositExists: the job's model was admitted to another competition (a repeat for the
                same competition returns the same admission; anyone may ask, only the consumer can submit it).
            SubmissionRefused: the competition is not open, the result was sealed to the consumer,
                does not check against the receipt, or the model breaks the rules.
        """
        km = self.key_manager
        job = km.market.job(job_id)
        if job.status is not JobStatus.COMPLETED:
            raise JobNotReady(f"job {job_id} is {job.status.name}, not COMPLETED")
        result = km.market.result_submitted(job_id)
        participant = str(job.consumer)
        what = f"job {job_id}'s model"
        with km.lock:
            by_job = self._submissions / "jobs" / f"{competition_id}-{job_id}.json"
            if by_job.exists():
                return self._admitted_before(by_job, competition_id, what)
            try:
                record = self.competitions.competition(competition_id)
                sealed_result = self.blobs.get(result.result_hash.hex())
                reply = self._request(
                    "admit_job_model", SubmissionRefused, chain_id=km.market.chain.chain_id, market=km.market.address_bytes,
                    competitions=self.competitions.address_bytes, **rules_fields(competition_id, record),
                    competition_status=int(record.status), closes_at=record.terms.closes_at, now=self.competitions.chain.now(),
                    job_id=job_id, job_status=int(job.status), job_consumer=to_canonical_address(participant),
                    job_consumer_key=job.consumer_key, result_hash=result.result_hash, model_hash=result.model_hash,
                    sealed_result=sealed_result,
                )  # fmt: skip
                content_hash: bytes = reply["content_hash"]
                if self.blobs.put(sealed_result[reply["ciphertext_offset"] :]) != content_hash.hex():
                    raise SubmissionRefused(f"job {job_id}: the model ciphertext stored is not the one the key manager admitted")
                admitted = AdmittedSubmission(
                    competition_id=competition_id, participant=participant, content_hash=content_hash,
                    weights_hash=reply["weights_hash"], admission=reply["admission"],
                )  # fmt: skip
                target = self.submission_path(content_hash, participant)
                self._keep(target, reply["sealed_key"], admitted, what)
                by_job.parent.mkdir(parents=True, exist_ok=True)
                _write_new(by_job, self._admission_path(target).read_bytes())
            except (DepositRefused, SubmissionRefused, KeyUnwrapFailed) as e:
                self._audit(
                    job_id, competition_id, result.result_hash, "", False, str(e), COMPETITION_DEPOSIT_REFUSED, provider=participant
                )
                raise
            reason = "a job's model sealed to the key manager, checked against its receipt and the rules"
            self._audit(job_id, competition_id, content_hash, "", False, reason, COMPETITION_DEPOSIT, provider=participant)
        logger.info("admitted job %d's model %s to competition %d for %s", job_id, content_hash.hex(), competition_id, participant)
        return admitted

    @staticmethod
    def _admission_path(target: Path) -> Path:
        return target.with_name(target.name + ".admission.json")

    def _keep(self, target: Path, sealed_key: bytes, admitted: AdmittedSubmission, what: str) -> None:
        """Keep an admitted model's sealed key and its admission (a repeat returns the same admission)."""
        try:
            _write_new(target, sealed_key)
        except FileExistsError as e:
            raise DepositExists(f"{what} was admitted already") from e
        record = {
            "competition_id": admitted.competition_id, "participant": admitted.participant,
            "content_hash": admitted.content_hash.hex(), "weights_hash": admitted.weights_hash.hex(),
            "admission": admitted.admission.hex(),
        }  # fmt: skip
        _write_new(self._admission_path(target), json.dumps(record).encode())

    def _admitted_before(self, target: Path, competition_id: int, what: str) -> AdmittedSubmission:
        """What was admitted before for ``target`` (a repeat, e.g. after a lost reply), if for this competition.

        Raises:
            DepositExists: it was admitted to another competition.
        """
        path = target if target.suffix == ".json" else self._admission_path(target)
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            raise DepositExists(f"{what} was admitted already") from e
        if record["competition_id"] != competition_id:
            raise DepositExists(f"{what} was admitted to competition {record['competition_id']}, not {competition_id}")
        return AdmittedSubmission(
            competition_id=competition_id, participant=record["participant"], content_hash=bytes.fromhex(record["content_hash"]),
            weights_hash=bytes.fromhex(record["weights_hash"]), admission=bytes.fromhex(record["admission"]),
        )  # fmt: skip

    def release_evaluation(self, competition_id: int, index: int, split: Split, *, evaluator: str) -> EvaluationKeys:
        """The test set's and submission ``index``'s keys, wrapped to evaluator ``evaluator``'s
        on-chain key for one scoring against the chain's current leaderboard best.

        Raises:
            KeyReleaseRefused: the trusted part refused (not the next public scoring, the window
                still open for a private one, scored already, not an active evaluator, no deposit).
        """
        km = self.key_manager
        chain = self.competitions.chain
        with km.lock:
            record = self.competitions.competition(competition_id)
            submission: SubmissionRecord | None = None
            content_hash = record.terms.test_set_hash
            try:
                if index >= record.submission_count:
                    raise KeyReleaseRefused(f"competition {competition_id} has no submission {index}")
                submission = self.competitions.submission(competition_id, index)
                content_hash = submission.content_hash
                test_set = self.test_set_path(record.terms.test_set_hash, record.organizer)
                sealed = self.submission_path(submission.content_hash, submission.participant)
                if not test_set.exists():
                    raise KeyReleaseRefused(f"the organizer of competition {competition_id} deposited no key for its test set")
                if not sealed.exists():
                    raise KeyReleaseRefused(f"no admitted key for submission {index} of competition {competition_id}")
                previous_best = record.public_best if split is Split.PUBLIC else 0
                reply = self._request(
                    "release_evaluation", KeyReleaseRefused, chain_id=chain.chain_id, competitions=self.competitions.address_bytes,
                    **rules_fields(competition_id, record), competition_status=int(record.status),
                    organizer=to_canonical_address(record.organizer), closes_at=record.terms.closes_at, now=chain.now(),
                    index=index, split=int(split), previous_best=previous_best, next_public=record.next_public,
                    public_scored=submission.public_scored, private_scored=submission.private_scored,
                    participant=to_canonical_address(submission.participant), submission_hash=submission.content_hash,
                    test_set_sealed_key=test_set.read_bytes(), submission_sealed_key=sealed.read_bytes(),
                    evaluator_signer=to_canonical_address(evaluator),
                    evaluator_active=km.registry.is_active(evaluator, Role.EVALUATOR),
                    evaluator_key=km.registry.enclave_of(evaluator).encryption_key,
                )  # fmt: skip
            except KeyReleaseRefused as e:
                self._audit(
                    index, competition_id, content_hash, evaluator, False, f"{split.name.lower()} scoring: {e}", COMPETITION_RELEASE
                )
                raise
            self._audit(
                index, competition_id, content_hash, evaluator, True,
                f"{split.name.lower()} scoring against best {previous_best}, active evaluator", COMPETITION_RELEASE,
            )  # fmt: skip
        return EvaluationKeys(test_set_key=reply["test_set_key"], submission_key=reply["submission_key"], previous_best=previous_best)

    def release_purchase(self, competition_id: int, index: int, *, buyer: str) -> bytes:
        """Submission ``index``'s model key wrapped to the key ``buyer`` gave when it bought it.

        Raises:
            KeyReleaseRefused: the competition is not closed, ``buyer`` did not buy it, or no admitted key.
        """
        km = self.key_manager
        with km.lock:
            submission = self.competitions.submission(competition_id, index)
            try:
                buyer = _address(buyer, "buyer")
                bought_with = self.competitions.purchase_key(competition_id, index, buyer)
                if km.confirmations and bought_with != self.competitions.purchase_key(
                    competition_id, index, buyer, block=self.competitions.chain.confirmed_block(km.confirmations)
                ):
                    raise KeyReleaseRefused(unconfirmed_message(f"{buyer}'s purchase of submission {index}", km.confirmations))
                record = self.competitions.competition(competition_id)
                sealed = self.submission_path(submission.content_hash, submission.participant)
                if not sealed.exists():
                    raise KeyReleaseRefused(f"no admitted key for submission {index} of competition {competition_id}")
                reply = self._request(
                    "release_purchase", KeyReleaseRefused, chain_id=self.competitions.chain.chain_id,
                    competitions=self.competitions.address_bytes, competition_id=competition_id, competition_status=int(record.status),
                    index=index, participant=to_canonical_address(submission.participant), submission_hash=submission.content_hash,
                    buyer=to_canonical_address(buyer), buyer_key=bought_with,
                    submission_sealed_key=sealed.read_bytes(),
                )  # fmt: skip
            except (KeyReleaseRefused, DepositSignatureInvalid) as e:
                self._audit(index, competition_id, submission.content_hash, buyer, False, f"purchase: {e}", COMPETITION_RELEASE)
                raise KeyReleaseRefused(str(e)) from e
            self._audit(index, competition_id, submission.content_hash, buyer, True, "purchase paid on-chain", COMPETITION_RELEASE)
        released: bytes = reply["released_key"]
        return released

    def _audit(
        self,
        index: int,
        competition_id: int,
        content_hash: bytes,
        party: str,
        released: bool,
        reason: str,
        kind: str,
        *,
        provider: str | None = None,
    ) -> None:
        self.key_manager.append_audit(
            job_id=index, dataset_id=competition_id, content_hash=content_hash, trainer=party, released=released, reason=reason,
            kind=kind, provider=provider,
        )  # fmt: skip


def _address(value: str, what: str) -> str:
    try:
        return str(to_checksum_address(value))
    except ValueError as e:
        raise DepositSignatureInvalid(f"the {what} {value!r} is not an address") from e
