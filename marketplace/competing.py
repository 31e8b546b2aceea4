"""The competition workflows: an organizer seals a test set and opens a competition, a participant
seals and submits a model, a buyer buys a model and opens it.

Test set and models are encrypted on the user's side (STRL, a fresh key each), stored in the blob
store, and their keys wrapped to the key manager's ATTESTED key from the registry, bound to what
they are for (:func:`~enclave_worker.trusted.keywrap.test_set_info`,
:func:`~enclave_worker.trusted.keywrap.submission_info`). Nobody but the evaluator enclave ever
holds the test set in the clear, and nobody but a buyer the chain shows paid ever gets a model's key.

Example:
    >>> opened = open_competition(organizer, test_set, terms=terms, rules=rules, competitions=market,
    ...                           registry=registry, key_manager=keys, blobs=blobs)  # doctest: +SKIP
    >>> entry = submit_model(alice, weights, competition_id=opened.competition_id, ask_price=10**17,
    ...                      competitions=market, registry=registry, key_manager=keys, blobs=blobs)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account.signers.local import LocalAccount
from eth_utils import to_canonical_address, to_checksum_address

from enclave_worker.trusted import dataformat, keywrap
from enclave_worker.trusted.competition import sign
from enclave_worker.trusted.dataset import DatasetPackage, Schema, canonical_json
from enclave_worker.trusted.errors import CiphertextTampered
from enclave_worker.trusted.receipt import Deposit

from .blobstore import BlobStore
from .chain import TxResult
from .competitions import CompetitionId, CompetitionMarketClient, CompetitionTerms
from .contracts import RegistryClient
from .errors import ConfigError

logger = logging.getLogger(__name__)


class CompetitionStore(Protocol):
    """Where a competition's ciphertexts and public documents live, named by their SHA-256 (a local
    blob store, or a gateway's ``/api/blobs``)."""

    def put_ciphertext(self, ciphertext: bytes) -> bytes: ...

    def put_schema(self, schema: Schema) -> bytes: ...

    def put_rules(self, rules: Rules) -> bytes: ...

    def get(self, digest: bytes) -> bytes: ...


class BlobCompetitionStore:
    """:class:`CompetitionStore` over a :class:`~marketplace.blobstore.BlobStore` (the one the key manager and evaluators read)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def put_ciphertext(self, ciphertext: bytes) -> bytes:
        return bytes.fromhex(self.blobs.put(ciphertext))

    def put_schema(self, schema: Schema) -> bytes:
        return bytes.fromhex(self.blobs.put(canonical_json(schema.to_json())))

    def put_rules(self, rules: Rules) -> bytes:
        return bytes.fromhex(self.blobs.put(rules.to_bytes()))

    def get(self, digest: bytes) -> bytes:
        return self.blobs.get(digest.hex())


@dataclass(frozen=True)
class TestSetDeposit:
    """A test set the key manager opened and keeps the key of."""

    content_hash: bytes
    schema_hash: bytes
    """SHA-256 of the test set's canonical schema (the competition's ``schemaHash``)."""
    rows: int


@dataclass(frozen=True)
class AdmittedSubmission:
    """A sealed model the key manager admitted to a competition: what ``CompetitionMarket.submit`` takes."""

    competition_id: int
    participant: str
    content_hash: bytes
    weights_hash: bytes
    admission: bytes
    """The key manager's EIP-712 ``Admission`` signature."""


class CompetitionKeyDepository(Protocol):
    """The key manager's competition side (in-process, or its gateway's routes)."""

    @property
    def signer(self) -> str: ...

    def deposit_test_set(self, content_hash: bytes, wrapped_key: bytes, *, organizer: str, signature: bytes) -> TestSetDeposit:
        """Keep ``organizer``'s test-set key (the ciphertext is in the blob store).

        Raises:
            DepositSignatureInvalid, DepositExists, KeyUnwrapFailed.
        """
        ...

    def admit(
        self, competition_id: int, content_hash: bytes, wrapped_key: bytes, *, participant: str, signature: bytes
    ) -> AdmittedSubmission:
        """Check ``participant``'s sealed model against the competition's rules and sign its admission.

        Raises:
            DepositSignatureInvalid, DepositExists, SubmissionRefused.
        """
        ...

    def admit_job_model(self, competition_id: int, job_id: int) -> AdmittedSubmission:
        """Admit the model of a completed job its consumer had sealed to the key manager, as the consumer's entry.

        Raises:
            JobNotReady, DepositExists, SubmissionRefused.
        """
        ...

    def release_purchase(self, competition_id: int, index: int, *, buyer: str) -> bytes:
        """The model key of a bought submission, wrapped to the key its buyer gave on-chain.

        Raises:
            KeyReleaseRefused: not bought by ``buyer``, or the competition is not closed.
        """
        ...


MAX_TITLE = 200
MAX_RULES_TEXT = 20_000


@dataclass(frozen=True)
class Rules:
    """The rules document of a competition: what its ``rulesHash`` commits to (stored in the blob store)."""

    title: str
    description: str = ""
    training_data: str = ""
    """Where participants find public training data (a URL, or empty)."""
    training_datasets: tuple[int, ...] = ()
    """Sterling datasets participants may train on through ordinary jobs."""

    def to_bytes(self) -> bytes:
        return canonical_json({"version": 1, **dataclasses.asdict(self), "training_datasets": list(self.training_datasets)})

    @classmethod
    def from_json(cls, document: object) -> Rules:
        """Parse a rules document.

        Raises:
            ConfigError: not a version-1 rules object with a title (the message says what is wrong).
        """
        if not isinstance(document, dict) or document.get("version") != 1:
            raise ConfigError("a rules document is a JSON object with version 1")
        unknown = set(document) - {"version", "title", "description", "training_data", "training_datasets"}
        if unknown:
            raise ConfigError(f"unknown rules fields {sorted(unknown)}")
        title, description, data = document.get("title"), document.get("description", ""), document.get("training_data", "")
        datasets = document.get("training_datasets", [])
        if not isinstance(title, str) or not 1 <= len(title) <= MAX_TITLE or not isinstance(description, str) or not isinstance(data, str):
            raise ConfigError(f"title (1..{MAX_TITLE} characters), description and training_data are strings")
        if len(description) + len(data) > MAX_RULES_TEXT:
            raise ConfigError(f"description and training_data hold at most {MAX_RULES_TEXT} characters together")
        if not isinstance(datasets, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in datasets):
            raise ConfigError("training_datasets is a list of dataset ids (integers >= 1)")
        return cls(title=title, description=description, training_data=data, training_datasets=tuple(datasets))

    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()


@dataclass(frozen=True)
class SealedTestSet:
    """A test set encrypted for the key manager."""

    ciphertext: bytes
    content_hash: bytes
    wrapped_key: bytes
    schema_hash: bytes
    rows: int


def seal_test_set(package: DatasetPackage, *, key_manager_key: bytes, chain_id: int, competitions: str | bytes) -> SealedTestSet:
    """Encrypt a test set with a fresh key wrapped to the key manager's key for this competition market."""
    key = dataformat.new_data_key()
    ciphertext = dataformat.encrypt_bytes(package.to_bytes(), key, kind=dataformat.Kind.DATASET, context=os.urandom(32))
    content_hash = hashlib.sha256(ciphertext).digest()
    wrapped = keywrap.wrap(key, key_manager_key, info=keywrap.test_set_info(chain_id, _address(competitions), content_hash))
    return SealedTestSet(ciphertext, content_hash, wrapped, package.schema.hash(), package.rows)


@dataclass(frozen=True)
class OpenedCompetition:
    competition_id: CompetitionId
    test_set: TestSetDeposit
    rules_hash: bytes
    tx: TxResult


def open_competition(
    organizer: LocalAccount,
    test_set: DatasetPackage,
    *,
    terms: CompetitionTerms,
    rules: Rules,
    competitions: CompetitionMarketClient,
    registry: RegistryClient,
    key_manager: CompetitionKeyDepository,
    blobs: CompetitionStore,
) -> OpenedCompetition:
    """Seal ``test_set``, store it, deposit its key with the key manager and create the competition.

    ``terms``' ``test_set_hash``, ``schema_hash`` and ``rules_hash`` are filled in here (pass zeros).

    Raises:
        ConfigError: the terms are invalid (as the contract would refuse them).
        DepositSignatureInvalid, KeyUnwrapFailed: the key manager refused the test set.
        ContractReverted: the chain refused the competition.
    """
    chain_id = competitions.chain.chain_id
    sealed = seal_test_set(
        test_set, key_manager_key=registry.active_key_manager_key(key_manager.signer), chain_id=chain_id, competitions=competitions.address
    )
    terms = dataclasses.replace(terms, test_set_hash=sealed.content_hash, schema_hash=sealed.schema_hash, rules_hash=rules.hash())
    terms.validate()
    if blobs.put_ciphertext(sealed.ciphertext) != sealed.content_hash:
        raise ConfigError("the blob store named the test set by another hash than its SHA-256")
    blobs.put_schema(test_set.schema)
    blobs.put_rules(rules)
    statement = Deposit(
        content_hash=sealed.content_hash, wrapped_key=sealed.wrapped_key, key_manager=to_canonical_address(key_manager.signer)
    )
    signature = sign(organizer, statement, chain_id=chain_id, competitions=competitions.address_bytes)
    deposit = key_manager.deposit_test_set(sealed.content_hash, sealed.wrapped_key, organizer=organizer.address, signature=signature)
    if deposit.schema_hash != sealed.schema_hash:
        raise ConfigError("the key manager read another schema from the test set than the one sealed")
    competition_id, tx = competitions.create_competition(organizer, terms)
    logger.info("opened competition %d (test set %s, %d rows)", competition_id, sealed.content_hash.hex(), sealed.rows)
    return OpenedCompetition(competition_id=competition_id, test_set=deposit, rules_hash=terms.rules_hash, tx=tx)


@dataclass(frozen=True)
class SealedSubmission:
    """A model encrypted for the key manager, bound to one competition and participant."""

    ciphertext: bytes
    content_hash: bytes
    weights_hash: bytes
    wrapped_key: bytes


def seal_submission(
    weights: bytes, *, key_manager_key: bytes, chain_id: int, competitions: str | bytes, competition_id: int, participant: str
) -> SealedSubmission:
    """Encrypt safetensors ``weights`` (with their spec and schema in the metadata) with a fresh
    key wrapped to the key manager for ``participant``'s entry to ``competition_id``."""
    key = dataformat.new_data_key()
    weights_hash = hashlib.sha256(weights).digest()
    ciphertext = dataformat.encrypt_bytes(weights, key, kind=dataformat.Kind.MODEL, context=weights_hash)
    content_hash = hashlib.sha256(ciphertext).digest()
    info = keywrap.submission_info(chain_id, _address(competitions), competition_id, _address(participant), content_hash)
    return SealedSubmission(ciphertext, content_hash, weights_hash, keywrap.wrap(key, key_manager_key, info=info))


@dataclass(frozen=True)
class SubmittedModel:
    competition_id: int
    index: int
    content_hash: bytes
    weights_hash: bytes
    tx: TxResult


def submit_model(
    participant: LocalAccount,
    weights: bytes,
    *,
    competition_id: int,
    ask_price: int,
    competitions: CompetitionMarketClient,
    registry: RegistryClient,
    key_manager: CompetitionKeyDepository,
    blobs: CompetitionStore,
) -> SubmittedModel:
    """Seal ``weights``, store them, have the key manager admit them and submit them on-chain.

    ``ask_price`` is what a buyer pays for the model after the close (0: not for sale).

    Raises:
        SubmissionRefused: the key manager refused the model (the competition's rules or window).
        ContractReverted: the chain refused the submission (window, cap, a duplicate).
    """
    chain_id = competitions.chain.chain_id
    sealed = seal_submission(
        weights, key_manager_key=registry.active_key_manager_key(key_manager.signer), chain_id=chain_id,
        competitions=competitions.address, competition_id=competition_id, participant=participant.address,
    )  # fmt: skip
    blobs.put_ciphertext(sealed.ciphertext)
    statement = Deposit(
        content_hash=sealed.content_hash, wrapped_key=sealed.wrapped_key, key_manager=to_canonical_address(key_manager.signer)
    )
    signature = sign(participant, statement, chain_id=chain_id, competitions=competitions.address_bytes)
    admitted = key_manager.admit(
        competition_id, sealed.content_hash, sealed.wrapped_key, participant=participant.address, signature=signature
    )
    index, tx = competitions.submit(
        participant, competition_id, admitted.content_hash, admitted.weights_hash, ask_price, admitted.admission
    )
    logger.info(
        "%s submitted model %s to competition %d as entry %d", participant.address, sealed.content_hash.hex(), competition_id, index
    )
    return SubmittedModel(
        competition_id=competition_id, index=index, content_hash=admitted.content_hash, weights_hash=admitted.weights_hash, tx=tx
    )


def submit_job_model(
    participant: LocalAccount,
    job_id: int,
    *,
    competition_id: int,
    ask_price: int,
    competitions: CompetitionMarketClient,
    key_manager: CompetitionKeyDepository,
) -> SubmittedModel:
    """Submit the model of ``participant``'s completed job ``job_id``, trained with its result
    sealed to the key manager (``Consumer.create_job(..., seal_to=<key manager's key>)``), without
    ever holding its weights.

    Raises:
        JobNotReady: the job has not completed.
        SubmissionRefused: the key manager refused the model (sealed to the consumer, the rules, the window).
        ContractReverted: the chain refused the submission.
    """
    admitted = key_manager.admit_job_model(competition_id, job_id)
    if admitted.participant.lower() != participant.address.lower():
        raise ConfigError(f"job {job_id} is {admitted.participant}'s, not {participant.address}'s")
    index, tx = competitions.submit(
        participant, competition_id, admitted.content_hash, admitted.weights_hash, ask_price, admitted.admission
    )
    logger.info("%s submitted job %d's model to competition %d as entry %d", participant.address, job_id, competition_id, index)
    return SubmittedModel(
        competition_id=competition_id, index=index, content_hash=admitted.content_hash, weights_hash=admitted.weights_hash, tx=tx
    )


@dataclass(frozen=True)
class BoughtModel:
    competition_id: int
    index: int
    weights: bytes
    """The plaintext safetensors (their SHA-256 is the submission's admitted weights hash)."""
    tx: TxResult


def buy_model(
    buyer: LocalAccount,
    competition_id: int,
    index: int,
    *,
    competitions: CompetitionMarketClient,
    key_manager: CompetitionKeyDepository,
    blobs: CompetitionStore,
) -> BoughtModel:
    """Buy submission ``index`` at its ask price, get its key from the key manager and decrypt it.

    A fresh X25519 key pair is made for the purchase; its public half goes on-chain with the
    payment, and the key manager wraps the model key to it only because the chain shows it paid.

    Raises:
        ContractReverted: the chain refused the purchase (not closed, not for sale, not allowed).
        KeyReleaseRefused: the key manager refused the key.
        CiphertextTampered: the decrypted model is not the one admitted.
    """
    private = X25519PrivateKey.generate()
    tx = competitions.buy(buyer, competition_id, index, keywrap.public_key_bytes(private))
    return BoughtModel(
        competition_id,
        index,
        open_bought_model(buyer.address, competition_id, index, private, competitions=competitions, key_manager=key_manager, blobs=blobs),
        tx,
    )


def open_bought_model(
    buyer: str,
    competition_id: int,
    index: int,
    private_key: X25519PrivateKey,
    *,
    competitions: CompetitionMarketClient,
    key_manager: CompetitionKeyDepository,
    blobs: CompetitionStore,
) -> bytes:
    """Decrypt a model ``buyer`` bought with the public half of ``private_key`` (again, at any time)."""
    submission = competitions.submission(competition_id, index)
    wrapped = key_manager.release_purchase(competition_id, index, buyer=buyer)
    info = keywrap.purchase_info(
        competitions.chain.chain_id, competitions.address_bytes, competition_id, index, _address(buyer), submission.content_hash
    )
    key = keywrap.unwrap(wrapped, private_key, info=info)
    weights = dataformat.decrypt_bytes(blobs.get(submission.content_hash), key, kind=dataformat.Kind.MODEL)
    expected = competitions.weights_hash(competition_id, index)
    if hashlib.sha256(weights).digest() != expected:
        raise CiphertextTampered(f"submission {index} of competition {competition_id} does not decrypt to the weights it was admitted with")
    return weights


def _address(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else to_canonical_address(to_checksum_address(value))
