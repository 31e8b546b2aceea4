"""Competitions: the list, a competition's rules, leaderboard and score history, and the key
manager's competition side (test-set deposits, admissions, purchase keys).

The gateway relays ciphertext, wrapped keys and signatures only: a test set is encrypted by its
organizer and a model by its participant, both to the key manager's **on-chain** key; the key
manager's trusted part opens them, and only an attested evaluator ever sees a test set in the
clear. Transactions (create, submit, close, buy) are signed by the users' wallets and relayed by
``POST /api/rpc`` like any other. The list, the leaderboard and the score history are read from
the chain index (:mod:`oracle.indexer`), as of its last indexed block.
"""

from __future__ import annotations

import logging

from eth_utils import to_checksum_address
from fastapi import APIRouter, Request

from enclave_worker.remote_keys import CompetitionKeyHost
from marketplace.competing import AdmittedSubmission, Rules
from marketplace.competitions import CompetitionMarketClient, CompetitionRecord
from marketplace.errors import ConfigError
from sterling.gateway import queries
from sterling.gateway.api.deps import BlobsDep, ServicesDep, SessionDep
from sterling.gateway.errors import BadRequest, NonStandardJson, NotFound, PayloadTooLarge
from sterling.gateway.schemas import (
    AdmissionCreate,
    AdmissionPublic,
    CompetitionDetailPublic,
    CompetitionPublic,
    DocumentPublic,
    JobAdmissionCreate,
    PurchaseKeyCreate,
    PurchaseKeyPublic,
    TestSetDepositCreate,
    TestSetDepositPublic,
)
from sterling.gateway.strict_json import strict_loads

logger = logging.getLogger(__name__)

router = APIRouter(tags=["competitions"])

MAX_RULES_BYTES = 64 * 1024


def _market(services: ServicesDep) -> CompetitionMarketClient:
    if services.competitions is None:
        raise NotFound("this gateway runs no competition market")
    return services.competitions


def _keys(services: ServicesDep) -> CompetitionKeyHost:
    if services.competition_keys is None:
        raise NotFound("this gateway has no key manager for competitions")
    return services.competition_keys


def _competition(market: CompetitionMarketClient, competition_id: int) -> CompetitionRecord:
    if not 1 <= competition_id <= market.competition_count():
        raise NotFound(f"competition {competition_id} does not exist")
    return market.competition(competition_id)


@router.get("/competitions", response_model=list[CompetitionPublic])
def list_competitions(services: ServicesDep, session: SessionDep) -> list[CompetitionPublic]:
    """Every competition, newest first (from the chain index; the phase at the chain's current time)."""
    _market(services)
    return queries.list_competitions(session, now=services.chain.now())


@router.get("/competitions/{competition_id}", response_model=CompetitionDetailPublic)
def get_competition(competition_id: int, services: ServicesDep, session: SessionDep) -> CompetitionDetailPublic:
    """One competition: its terms and rules, every submission with its scores, and every posted score over time
    (from the chain index; the rules from the blob store, the phase at the chain's current time)."""
    _market(services)
    return queries.competition_detail(session, competition_id, services.blobs, now=services.chain.now())


@router.post(
    "/competition-rules",
    status_code=201,
    response_model=DocumentPublic,
    responses={422: {"description": "not a valid rules document"}},
)
async def publish_rules(request: Request, blobs: BlobsDep) -> DocumentPublic:
    """Validate a competition's rules document (``{"version": 1, "title", "description", "training_data",
    "training_datasets"}``), store its canonical JSON; the hash is the competition's ``rulesHash``."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_RULES_BYTES:
            raise PayloadTooLarge(f"a rules document holds at most {MAX_RULES_BYTES} bytes")
    try:
        rules = Rules.from_json(strict_loads(bytes(body)))
    except (NonStandardJson, ConfigError) as e:
        raise BadRequest(f"rules refused: {e}") from e
    return DocumentPublic(sha256=blobs.put(rules.to_bytes()))


def _hex(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def _address(value: str) -> str:
    return str(to_checksum_address("0x" + value.removeprefix("0x")))


@router.post(
    "/key-manager/test-sets",
    status_code=201,
    response_model=TestSetDepositPublic,
    responses={400: {"description": "not signed by the organizer, or the key does not open the test set"},
               404: {"description": "ciphertext not stored"}, 409: {"description": "deposited already"}},
)  # fmt: skip
def deposit_test_set(body: TestSetDepositCreate, services: ServicesDep) -> TestSetDepositPublic:
    """Forward an organizer's test-set key, wrapped to the key manager's attested key; the key manager
    opens the test set once (it must be a valid dataset package) and keeps the key for evaluators."""
    keys = _keys(services)
    content_hash = body.content_hash.lower().removeprefix("0x")
    if not services.blobs.has(content_hash):
        raise NotFound(f"no ciphertext {content_hash} in the blob store: upload the test set before depositing its key")
    deposit = keys.deposit_test_set(
        bytes.fromhex(content_hash), _hex(body.wrapped_key), organizer=_address(body.organizer), signature=_hex(body.signature)
    )
    return TestSetDepositPublic(
        content_hash="0x" + content_hash, schema_hash="0x" + deposit.schema_hash.hex(), rows=deposit.rows, key_manager=keys.signer
    )


def _admission(admitted: AdmittedSubmission, key_manager: str) -> AdmissionPublic:
    return AdmissionPublic(
        competition_id=admitted.competition_id, participant=admitted.participant, content_hash="0x" + admitted.content_hash.hex(),
        weights_hash="0x" + admitted.weights_hash.hex(), admission="0x" + admitted.admission.hex(), key_manager=key_manager,
    )  # fmt: skip


@router.post(
    "/key-manager/admissions",
    status_code=201,
    response_model=AdmissionPublic,
    responses={400: {"description": "not signed by the participant, or the key does not open under this competition and participant"},
               403: {"description": "the model breaks the competition's rules, or its window is closed"},
               404: {"description": "ciphertext not stored, or no such competition"}},
)  # fmt: skip
def admit(body: AdmissionCreate, services: ServicesDep) -> AdmissionPublic:
    """Have the key manager check a sealed model against the competition's rules and sign its
    admission, which the participant then submits on-chain (``CompetitionMarket.submit``). Asking
    again for the same model returns the same admission."""
    keys = _keys(services)
    _competition(_market(services), body.competition_id)
    content_hash = body.content_hash.lower().removeprefix("0x")
    if not services.blobs.has(content_hash):
        raise NotFound(f"no ciphertext {content_hash} in the blob store: upload the model before asking for its admission")
    admitted = keys.admit(
        body.competition_id, bytes.fromhex(content_hash), _hex(body.wrapped_key), participant=_address(body.participant),
        signature=_hex(body.signature),
    )  # fmt: skip
    return _admission(admitted, keys.signer)


@router.post(
    "/key-manager/job-admissions",
    status_code=201,
    response_model=AdmissionPublic,
    responses={403: {"description": "sealed to its consumer, or the model breaks the rules"},
               404: {"description": "no such job or competition, or the job has not completed"}},
)  # fmt: skip
def admit_job_model(body: JobAdmissionCreate, services: ServicesDep) -> AdmissionPublic:
    """Admit the model of a completed job whose consumer had it sealed to the key manager, as the
    consumer's entry: nobody, the participant included, ever holds its weights."""
    keys = _keys(services)
    _competition(_market(services), body.competition_id)
    if not 1 <= body.job_id <= services.market.job_count():
        raise NotFound(f"job {body.job_id} does not exist")
    return _admission(keys.admit_job_model(body.competition_id, body.job_id), keys.signer)


@router.post(
    "/key-manager/purchases",
    response_model=PurchaseKeyPublic,
    responses={
        403: {"description": "not bought by this buyer, or the competition is not closed"},
        404: {"description": "no such submission"},
    },
)
def purchase_key(body: PurchaseKeyCreate, services: ServicesDep, session: SessionDep) -> PurchaseKeyPublic:
    """A bought model's key, wrapped to the X25519 key its buyer gave with ``CompetitionMarket.buy``:
    only that buyer opens it. Every unsold model's key stays sealed. The weights hash comes from
    the index (from the chain's ``Submitted`` logs while the index has not caught up)."""
    keys, market = _keys(services), _market(services)
    record = _competition(market, body.competition_id)
    if body.index >= record.submission_count:
        raise NotFound(f"competition {body.competition_id} has no submission {body.index}")
    buyer = _address(body.buyer)
    released = keys.release_purchase(body.competition_id, body.index, buyer=buyer)
    submission = market.submission(body.competition_id, body.index)
    weights_hash = queries.submission_weights_hash(session, body.competition_id, body.index)
    if weights_hash is None:
        weights_hash = "0x" + market.weights_hash(body.competition_id, body.index, from_block=services.deployment_block).hex()
    return PurchaseKeyPublic(
        competition_id=body.competition_id, index=body.index, buyer=buyer, content_hash="0x" + submission.content_hash.hex(),
        weights_hash=weights_hash, released_key="0x" + released.hex(),
    )  # fmt: skip
