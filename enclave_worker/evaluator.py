"""Host side of an evaluator enclave: scores competition submissions and posts the signed scores.

The host reads what is due from the chain — the next submission in order on the public split
(the Ladder's leaderboard is posted in submission order), and, from the close of the window on,
every submission without a private score — asks the key manager for the two keys of that one
scoring (:meth:`~.competition_keys.CompetitionKeyService.release_evaluation`), fetches the test
set's and the model's ciphertexts from the blob store, has the trusted part score it and posts
the receipt with ``CompetitionMarket.postScore``. The host never sees the test set, the model or
the exact public score: only the receipt the chain takes.

A receipt the chain refuses (the leaderboard moved under it) is not retried against another best:
the key manager and the evaluator release and score each (submission, split) against one best only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from marketplace.blobstore import BlobAccess
from marketplace.chain import TxResult
from marketplace.competitions import CompetitionMarketClient
from marketplace.contracts import RegistryClient

from .competition_keys import EvaluationKeys, rules_fields
from .host import EnclaveRequestFailed
from .sim_platform import LaunchedEnclave
from .trusted.competition import ScoreReceipt
from .trusted.errors import EvaluationRefused
from .trusted.onchain import CompetitionStatus, Role, Split

logger = logging.getLogger(__name__)


class EvaluationKeySource(Protocol):
    """Where an evaluator gets the keys of one scoring (the key manager, in-process or over HTTP)."""

    def release_evaluation(self, competition_id: int, index: int, split: Split, *, evaluator: str) -> EvaluationKeys: ...


@dataclass(frozen=True)
class PostedScore:
    """A score the evaluator computed and the chain accepted."""

    competition_id: int
    index: int
    split: Split
    score: int
    """The released value in 10⁻⁶ metric units (PUBLIC: the Ladder's leaderboard value)."""
    previous_best: int
    rows: int
    """Test rows of the split."""
    seconds: float
    """Wall time of the trusted scoring (decrypting, the forward passes, the metric, signing)."""
    tx: TxResult


class EvaluatorService:
    """Scores what is due on one competition market with one evaluator enclave."""

    def __init__(
        self,
        enclave: LaunchedEnclave,
        *,
        competitions: CompetitionMarketClient,
        registry: RegistryClient,
        keys: EvaluationKeySource,
        blobs: BlobAccess,
        operator: LocalAccount,
    ) -> None:
        if enclave.process.role is not Role.EVALUATOR:
            raise ValueError(f"an evaluator service needs an evaluator enclave, not a {enclave.process.role.name.lower()} one")
        self.enclave = enclave
        self.competitions = competitions
        self.registry = registry
        self.keys = keys
        self.blobs = blobs
        self.operator = operator
        self.last_poll: float | None = None
        """Wall time (``time.time()``) of the last round of :meth:`serve` that read the chain without an error."""
        self.posted: dict[Split, int] = dict.fromkeys(Split, 0)
        """Scores this host posted (the chain accepted), by split."""
        self._lock = threading.Lock()
        self._closed: set[int] = set()  # competitions seen closed: nothing is ever due on them again

    @property
    def signer(self) -> str:
        return str(to_checksum_address(self.enclave.process.signer))

    def due(self, competition_id: int) -> list[tuple[int, Split]]:
        """The scorings due on a competition now, in the order they must be posted."""
        record = self.competitions.competition(competition_id)
        if record.status is not CompetitionStatus.OPEN:
            if record.status is CompetitionStatus.CLOSED:
                self._closed.add(competition_id)
            return []
        due: list[tuple[int, Split]] = []
        if record.next_public < record.submission_count:
            due.append((record.next_public, Split.PUBLIC))
        if record.private_scored < record.submission_count and self.competitions.chain.now() >= record.terms.closes_at:
            for index in range(record.submission_count):
                if not self.competitions.submission(competition_id, index).private_scored:
                    due.append((index, Split.PRIVATE))
        return due

    def score(self, competition_id: int, index: int, split: Split) -> PostedScore:
        """Score submission ``index`` of a competition on ``split`` and post the receipt.

        Raises:
            KeyReleaseRefused: the key manager refused the scoring (not due, scored already).
            EvaluationRefused: the trusted part refused it.
            ContractReverted: the chain refused the receipt.
        """
        with self._lock:
            keys = self.keys.release_evaluation(competition_id, index, split, evaluator=self.signer)
            record = self.competitions.competition(competition_id)
            submission = self.competitions.submission(competition_id, index)
            started = time.perf_counter()
            try:
                reply = self.enclave.process.request(
                    "score", chain_id=self.competitions.chain.chain_id, competitions=self.competitions.address_bytes,
                    **rules_fields(competition_id, record), index=index, split=int(split), previous_best=keys.previous_best,
                    test_set_key=keys.test_set_key, test_set=self.blobs.get(record.terms.test_set_hash.hex()),
                    submission_hash=submission.content_hash, submission_key=keys.submission_key,
                    submission=self.blobs.get(submission.content_hash.hex()),
                )  # fmt: skip
            except EnclaveRequestFailed as e:
                raise EvaluationRefused(f"submission {index} of competition {competition_id}: {e.error}: {e.message}") from e
            seconds = time.perf_counter() - started
            r = reply["receipt"]
            receipt = ScoreReceipt(
                competition_id=r["competition_id"],
                index=r["index"],
                content_hash=r["content_hash"],
                test_set_hash=r["test_set_hash"],
                metric=r["metric"],
                split=Split(r["split"]),
                score=r["score"],
                previous_best=r["previous_best"],
            )
            tx = self.competitions.post_score(self.operator, receipt, reply["signature"])
            self.posted[split] += 1
        logger.info(
            "posted the %s score %d of submission %d of competition %d (%d rows, %.3f s)",
            split.name.lower(), receipt.score, index, competition_id, reply["rows"], seconds,
        )  # fmt: skip
        return PostedScore(
            competition_id=competition_id,
            index=index,
            split=split,
            score=receipt.score,
            previous_best=receipt.previous_best,
            rows=int(reply["rows"]),
            seconds=seconds,
            tx=tx,
        )

    def run_once(self) -> list[PostedScore]:
        """Score everything due on every open competition; a refusal is logged and the rest goes on.

        Each pass posts everything :meth:`due` listed (at most one public score, as the Ladder
        takes them in order, and every private one), then asks again, as a public score makes
        the next one due: a round reads each submission once, not once per scoring.
        """
        posted: list[PostedScore] = []
        for competition_id in range(1, self.competitions.competition_count() + 1):
            if competition_id in self._closed:
                continue
            failed: set[tuple[int, Split]] = set()
            while due := [d for d in self.due(competition_id) if d not in failed]:
                for index, split in due:
                    try:
                        posted.append(self.score(competition_id, index, split))
                    except Exception as e:  # one bad scoring must not stop the others; it is logged with its cause
                        logger.warning("cannot score submission %d of competition %d (%s): %s", index, competition_id, split.name, e)
                        failed.add((index, split))
        return posted

    def serve(self, stop: threading.Event, *, interval: float = 2.0) -> None:
        """Score what is due every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.run_once()
                self.last_poll = time.time()
            except Exception:  # the chain node may be away for a while; try again next round
                logger.exception("evaluator round failed")
            stop.wait(interval)
