"""Competitions inside the enclave: what a valid submission is, and scoring it on a private test set.

The key manager admits a sealed model to a competition only if :func:`open_submission` accepts it
(the competition's input schema, an allowed architecture, at most ``max_parameters`` parameters,
weights that fit their spec); the evaluator opens it again the same way and scores it with
:class:`Evaluator`. One definition of the rules serves both, so an admitted model always scores.

Scoring follows "one key, one output" (docs/competitions.md): the key manager releases a
submission's key and the test set's key for ONE scoring — a submission, a split and the leaderboard
best the Ladder compares against — bound into the wrap (:func:`keywrap.evaluation_info`); the
evaluator keeps what it signed per (submission, split) and answers a repeat with the same receipt,
and refuses a repeat against another best. Scoring is deterministic, so a host that restarts an
evaluator and asks again learns nothing new.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from eth_account.signers.local import LocalAccount
from safetensors.torch import load as load_tensors
from torch import nn

from . import dataformat, keywrap, ladder, metrics
from .competition import ScoreReceipt, sign
from .dataset import DatasetPackage, Schema
from .errors import CiphertextTampered, EvaluationRefused, InvalidModelSpec, ModelLoadFailed, ProtocolError, SubmissionRefused
from .inference import WEIGHTS_SPEC_KEY, weights_schema, weights_spec
from .models import build_model
from .onchain import NO_SCORE_LOWER_IS_BETTER, Architecture, Metric, Split

ARCHITECTURES: dict[str, Architecture] = {
    "logistic_regression": Architecture.LOGISTIC_REGRESSION,
    "mlp": Architecture.MLP,
    "cnn": Architecture.CNN,
}
"""A model spec's ``architecture`` and its bit in ``CompetitionTerms.architectures``."""

SCORING_BATCH = 4096
"""Test rows per forward pass."""
TEST_SET_CACHE = 2
"""Decrypted test sets an evaluator keeps (one per running competition is the usual case)."""


@dataclass(frozen=True)
class Rules:
    """The competition's terms that decide what a valid submission is and how it is scored, as
    the host read them from ``CompetitionMarket.competitionOf``; checked like the contract checks them."""

    competition_id: int
    test_set_hash: bytes
    schema_hash: bytes
    metric: Metric
    public_split_bps: int
    ladder_step: int
    max_parameters: int
    architectures: Architecture

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Rules:
        """Take the rules of a request.

        Raises:
            ProtocolError: a value the contract would not have accepted.
        """
        if fields["metric"] not in (m.value for m in Metric):
            raise ProtocolError(f"unknown metric {fields['metric']}")
        if not 1 <= fields["public_split_bps"] <= 9999:
            raise ProtocolError("the public split must be 1..9999 basis points")
        if not 1 <= fields["ladder_step"] < 2**32:
            raise ProtocolError("the Ladder step must be a uint32 >= 1")
        if fields["max_parameters"] >= 2**32:
            raise ProtocolError("max_parameters is a uint32")
        mask = fields["architectures"]
        if not 1 <= mask <= int(Architecture.LOGISTIC_REGRESSION | Architecture.MLP | Architecture.CNN):
            raise ProtocolError(f"architecture mask {mask} names no or unknown architectures")
        return cls(
            competition_id=fields["competition_id"],
            test_set_hash=fields["test_set_hash"],
            schema_hash=fields["schema_hash"],
            metric=Metric(fields["metric"]),
            public_split_bps=fields["public_split_bps"],
            ladder_step=fields["ladder_step"],
            max_parameters=fields["max_parameters"],
            architectures=Architecture(mask),
        )


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of a built model (what ``maxParameters`` limits)."""
    return sum(p.numel() for p in module.parameters())


def open_submission(weights: bytes, *, rules: Rules) -> tuple[nn.Module, Schema]:
    """Build a submitted model from its safetensors and check it against the competition's rules.

    The weights carry their spec and input schema in their metadata (as a Sterling job's model
    does), so the submission is self-describing and its weights hash commits to both.

    Returns:
        The model in eval mode without gradients, and its input schema.

    Raises:
        SubmissionRefused: another input schema than the competition's, an architecture it does
            not allow, more parameters than it allows, or weights that do not fit their spec.
    """
    try:
        spec = weights_spec(weights)
        schema = weights_schema(weights, model_id=0)
    except ModelLoadFailed as e:
        raise SubmissionRefused(
            f"the model carries no valid spec and input schema in its safetensors metadata ({WEIGHTS_SPEC_KEY!r}; {type(e).__name__})"
        ) from e
    if schema.task != "classification":
        raise SubmissionRefused(f"competitions score classifiers' probabilities; the model is a {schema.task} model")
    if schema.hash() != rules.schema_hash:
        raise SubmissionRefused(
            f"the model takes input schema {schema.hash().hex()}, "
            f"competition {rules.competition_id} scores schema {rules.schema_hash.hex()}"
        )
    bit = ARCHITECTURES.get(spec.architecture)
    if bit is None:
        raise SubmissionRefused(
            f"competitions take {', '.join(ARCHITECTURES)} models; {spec.architecture} has no bit in CompetitionTerms.architectures"
        )
    if not bit & rules.architectures:
        allowed = sorted(name for name, b in ARCHITECTURES.items() if b & rules.architectures)
        raise SubmissionRefused(f"competition {rules.competition_id} allows {', '.join(allowed)}, not {spec.architecture}")
    try:
        module = build_model(spec, schema)
        module.load_state_dict(load_tensors(weights), strict=True)
    except InvalidModelSpec as e:
        raise SubmissionRefused(f"the model's spec does not fit its schema: {e}") from e
    except Exception as e:  # safetensors and torch raise several types for foreign or mis-shaped weights
        raise SubmissionRefused(f"the weights do not fit their spec and schema ({type(e).__name__})") from e
    count = parameter_count(module)
    if rules.max_parameters and count > rules.max_parameters:
        raise SubmissionRefused(
            f"the model has {count} parameters, competition {rules.competition_id} allows at most {rules.max_parameters}"
        )
    module.eval()
    module.requires_grad_(False)
    return module, schema


def class_probabilities(module: nn.Module, features: np.ndarray, *, batch: int = SCORING_BATCH) -> np.ndarray:
    """Softmax outputs of ``module`` for every row of ``features`` (float64, one row per test row).

    A row whose outputs are not finite (a model that overflows on some input) scores as the uniform
    distribution: the model gets chance level on it, deterministically, instead of failing the scoring.
    """
    parts: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, features.shape[0], batch):
            x = torch.from_numpy(np.ascontiguousarray(features[start : start + batch]))
            parts.append(torch.softmax(module(x).double(), dim=1).numpy())
    if not parts:
        return np.empty((0, 0), dtype=np.float64)
    probabilities = np.concatenate(parts)
    broken = ~np.isfinite(probabilities).all(axis=1)
    if broken.any():
        probabilities[broken] = 1.0 / probabilities.shape[1]
    return probabilities


@dataclass(frozen=True)
class Scored:
    """A signed score, as the evaluator answers (and re-answers) it."""

    receipt: ScoreReceipt
    signature: bytes
    rows: int
    """Test rows of the split the score was computed on (public: it follows from the split rule)."""

    def to_reply(self) -> dict[str, Any]:
        r = self.receipt
        return {
            "receipt": {
                "competition_id": r.competition_id,
                "index": r.index,
                "content_hash": r.content_hash,
                "test_set_hash": r.test_set_hash,
                "metric": int(r.metric),
                "split": int(r.split),
                "score": r.score,
                "previous_best": r.previous_best,
            },
            "signature": self.signature,
            "rows": self.rows,
        }


Scoring = tuple[int, bytes, int, int, int]
"""(chain id, competition market, competition id, submission index, split)."""


class Evaluator:
    """The evaluator enclave's state: decrypted test sets (LRU) and every score it signed."""

    def __init__(self, account: LocalAccount, box: Any) -> None:
        self._account = account
        self._box = box
        self._test_sets: OrderedDict[tuple[int, bytes, bytes], DatasetPackage] = OrderedDict()
        self._scored: dict[Scoring, tuple[int, Scored]] = {}  # -> (previous best it was scored against, the answer)

    def score(
        self,
        *,
        chain_id: int,
        competitions: bytes,
        rules: Rules,
        index: int,
        split: Split,
        previous_best: int,
        test_set_key: bytes,
        test_set: bytes,
        submission_hash: bytes,
        submission_key: bytes,
        submission: bytes,
    ) -> Scored:
        """Score submission ``index`` on one split of the test set and sign the receipt.

        PUBLIC: the released score is the Ladder's (:func:`ladder.ladder_step`) against
        ``previous_best``; PRIVATE: the submission's own score (``previous_best`` must be 0).

        Raises:
            EvaluationRefused: this submission and split were scored against another best already.
            KeyUnwrapFailed: a key was not released to this evaluator for this very scoring.
            CiphertextTampered: a ciphertext is not the one the chain names.
            SubmissionRefused: the model does not meet the rules (never for an admitted model).
        """
        if split is Split.PRIVATE and previous_best != 0:
            raise ProtocolError("a private score takes previous_best 0")
        if split is Split.PUBLIC and not rules.metric.higher_is_better and previous_best == 0:
            raise ProtocolError("a lower-is-better leaderboard starts at 2**64 - 1, never 0")
        scoring: Scoring = (chain_id, competitions, rules.competition_id, index, int(split))
        done = self._scored.get(scoring)
        if done is not None:
            if done[0] != previous_best:
                raise EvaluationRefused(
                    f"submission {index} of competition {rules.competition_id} was scored on the {split.name.lower()} split against "
                    f"best {done[0]} already: one submission, one score per split"
                )
            return done[1]
        if hashlib.sha256(test_set).digest() != rules.test_set_hash:
            raise CiphertextTampered(f"competition {rules.competition_id}: the test set is not the one its terms name")
        if hashlib.sha256(submission).digest() != submission_hash:
            raise CiphertextTampered(f"submission {index}: the ciphertext is not the one it committed on-chain")

        def info(content_hash: bytes) -> bytes:
            return keywrap.evaluation_info(chain_id, competitions, rules.competition_id, index, int(split), previous_best, content_hash)

        data_key = keywrap.unwrap(test_set_key, self._box, info=info(rules.test_set_hash))
        model_key = keywrap.unwrap(submission_key, self._box, info=info(submission_hash))
        package = self._test_set(chain_id, competitions, rules.test_set_hash, data_key, test_set)
        if package.schema.hash() != rules.schema_hash:
            raise EvaluationRefused(f"competition {rules.competition_id}: the test set's schema is not the one its terms name")
        weights = dataformat.decrypt_bytes(submission, model_key, kind=dataformat.Kind.MODEL)
        module, _ = open_submission(weights, rules=rules)
        del weights
        public = ladder.public_rows(rules.test_set_hash, package.rows, rules.public_split_bps)
        rows = public if split is Split.PUBLIC else ~public
        features, labels = package.features[rows], package.labels[rows]
        value = metrics.to_units(rules.metric, metrics.score(rules.metric, class_probabilities(module, features), labels))
        released = ladder.ladder_step(rules.metric, value, previous_best, rules.ladder_step) if split is Split.PUBLIC else value
        receipt = ScoreReceipt(
            competition_id=rules.competition_id,
            index=index,
            content_hash=submission_hash,
            test_set_hash=rules.test_set_hash,
            metric=int(rules.metric),
            split=split,
            score=released,
            previous_best=previous_best,
        )
        scored = Scored(
            receipt=receipt, signature=sign(self._account, receipt, chain_id=chain_id, competitions=competitions), rows=int(rows.sum())
        )
        self._scored[scoring] = (previous_best, scored)
        return scored

    def _test_set(self, chain_id: int, competitions: bytes, test_set_hash: bytes, key: bytes, ciphertext: bytes) -> DatasetPackage:
        """The decrypted test set: decrypted once, then reused while cached (the key still has to
        be released for every scoring, so the cache never scores without the key manager)."""
        cache_key = (chain_id, competitions, test_set_hash)
        package = self._test_sets.get(cache_key)
        if package is None:
            package = DatasetPackage.from_bytes(dataformat.decrypt_bytes(ciphertext, key, kind=dataformat.Kind.DATASET))
            self._test_sets[cache_key] = package
            while len(self._test_sets) > TEST_SET_CACHE:
                self._test_sets.popitem(last=False)
        self._test_sets.move_to_end(cache_key)
        return package


def initial_best(metric: Metric) -> int:
    """The leaderboard's best before its first public score (``publicBest`` at creation)."""
    return 0 if metric.higher_is_better else NO_SCORE_LOWER_IS_BETTER
