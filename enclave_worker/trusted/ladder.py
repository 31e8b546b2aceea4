"""The public leaderboard's release rule: a fixed public/private split and the Ladder mechanism.

A competition's private test set is cut once into a public split, which scores submissions while
the window is open, and a private split, which decides the winner at the close. The cut
(:func:`public_rows`) is a function of the test set's hash alone, so it is fixed as soon as the
organizer commits to the test set and no participant can steer which rows land where.

Public scores are not released as they are: a participant who sees every public score can fit the
public split by submitting many variants and keeping the ones that scored well (the "boosting
attack" of Blum & Hardt, Section 5; ``tests/enclave_worker/test_ladder.py`` runs it). The evaluator
releases them through the Ladder (Blum & Hardt, "The Ladder: A Reliable Leaderboard for Machine
Learning Competitions", ICML 2015, Algorithm 1). In the paper's notation, with S the public split,
R_S(f_t) the empirical loss of submission t on it and η > 0 the step:

    R_0 ← ∞
    for t = 1, 2, …:
        if R_S(f_t) < R_{t−1} − η:  R_t ← [R_S(f_t)]_η   (R_S(f_t) rounded to the nearest multiple of η)
        else:                       R_t ← R_{t−1}
        release R_t

:func:`ladder_step` is one round of it, on the fixed-point integers the chain stores (10⁻⁶ units,
:data:`~.onchain.SCORE_SCALE`): the submission's exact score L_t, the leaderboard's current value
R_{t−1} (``publicBest`` on-chain) and η, all in units. The leaderboard reveals a new value only for
a submission that beats it by more than η, so over a whole competition it takes at most about
1/η + 1 values, and what an adaptive participant learns from it is that little (the paper's
Theorem 3.1: leaderboard error O((log(k·n) / n)^{1/3}) for k submissions on n public rows with
η ≈ (log(k·n) / n)^{1/3}).
"""

from __future__ import annotations

import hashlib
import operator

import numpy as np

from .errors import InvalidDataset, ProtocolError
from .onchain import NO_SCORE_LOWER_IS_BETTER, SCORE_SCALE, Metric

BPS = 10_000
"""``public_split_bps`` is the public split's share of the test rows in basis points of this."""
NO_SCORE_HIGHER_IS_BETTER = 0
"""``publicBest`` before the first public score of a higher-is-better metric."""
MAX_SCORE = 2**64 - 2
"""The largest score: 2⁶⁴ − 1 is :data:`~.onchain.NO_SCORE_LOWER_IS_BETTER`."""


def public_rows(test_set_hash: bytes, rows: int, public_split_bps: int) -> np.ndarray:
    """Which rows of a test set are in its public split (True) rather than its private one (False).

    Row i is public iff ``int.from_bytes(SHA-256(test_set_hash || uint64_be(i))[:8], "big") % 10_000 <
    public_split_bps``: each row independently, with probability ``public_split_bps / 10_000`` (the
    modulo's bias, 2⁶⁴ mod 10⁴ / 2⁶⁴ < 10⁻¹⁵, is negligible). The assignment is a public function of
    the committed test set, so anyone can recompute it and no participant can steer it; the organizer,
    who chose the rows, could grind their order for a split it likes, but it holds the labels anyway.
    One SHA-256 per row: about 0.5 µs, 50 ms for 100,000 rows.

    Args:
        test_set_hash: The 32-byte SHA-256 of the test set's ciphertext, as committed on-chain.
        rows: The test set's number of rows (≥ 1).
        public_split_bps: The public share in basis points, in [1, 9999].

    Returns:
        A (rows,) bool array, True for the public rows.

    Raises:
        ProtocolError: ``test_set_hash`` is not 32 bytes or ``public_split_bps`` is outside [1, 9999].
        ValueError: ``rows`` is not a positive integer.
        InvalidDataset: the split leaves the public or the private part empty (a test set too small).
    """
    if not isinstance(test_set_hash, bytes):
        raise ProtocolError(f"a test set hash is 32 bytes, not a {type(test_set_hash).__name__}")
    if len(test_set_hash) != 32:
        raise ProtocolError(f"a test set hash is 32 bytes, not {len(test_set_hash)}")
    public_split_bps = _integer("public_split_bps", public_split_bps, ProtocolError)
    if not 1 <= public_split_bps < BPS:
        raise ProtocolError(f"public_split_bps must be in [1, {BPS - 1}] so that both splits can hold rows, not {public_split_bps}")
    rows = _integer("rows", rows, ValueError)
    if rows < 1:
        raise ValueError(f"a test set has at least one row, not {rows}")
    sha256 = hashlib.sha256
    digests = b"".join([sha256(test_set_hash + i.to_bytes(8, "big")).digest()[:8] for i in range(rows)])
    public: np.ndarray = np.frombuffer(digests, dtype=">u8") % np.uint64(BPS) < np.uint64(public_split_bps)
    in_public = int(public.sum())
    if in_public == 0 or in_public == rows:
        empty = "public" if in_public == 0 else "private"
        raise InvalidDataset(
            f"the {empty} split of this {rows}-row test set is empty at {public_split_bps} bps public: "
            "the test set is too small for the split"
        )
    return public


def ladder_step(metric: Metric, score: int, previous_best: int, step: int) -> int:
    """The Ladder's released leaderboard value R_t after a submission scoring ``score`` (all in 10⁻⁶ units).

    For a higher-is-better metric (the mirror of the paper's loss form): if ``score > previous_best +
    step``, R_t is ``score`` rounded to the nearest multiple of ``step`` (a tie rounds up), else R_t =
    ``previous_best``. A lower-is-better metric is the paper's form: if ``score < previous_best − step``,
    R_t is the rounded score, else ``previous_best``. The leaderboard's initial value stands for R_0 =
    ∓∞, so the first submission always moves it: 0 for higher-is-better metrics, 2⁶⁴ − 1
    (:data:`~.onchain.NO_SCORE_LOWER_IS_BETTER`) for lower-is-better ones.

    The released value is never worse than ``previous_best``, and a move is always by at least
    ``step / 2``: past the threshold, rounding shifts the score by at most ``step / 2``, so it stays
    on the better side of ``previous_best ± step / 2``. It is then clamped into the metric's range,
    [0, 10⁶] for higher-is-better metrics (all of which lie in [0, 1]) and [0, 2⁶⁴ − 2] for the
    others, which keeps it better than ``previous_best`` too (the score itself lies in that range).
    A higher-is-better first score below ``step / 2`` rounds to 0 and so leaves the leaderboard at
    "no score".

    Args:
        metric: The competition's metric (its direction).
        score: The submission's exact public-split score L_t, from :func:`~.metrics.to_units`.
        previous_best: The leaderboard's current value R_{t−1} (``publicBest`` on-chain).
        step: The Ladder's step η, ≥ 1.

    Returns:
        R_t, to be signed as the public score and stored as the new ``publicBest``.

    Raises:
        ProtocolError: ``previous_best`` or ``step`` (which come from the chain) are out of range.
        ValueError: ``score`` is out of the metric's range.

    Example:
        >>> ladder_step(Metric.ACCURACY, 912_345, 850_000, 10_000)
        910000
        >>> ladder_step(Metric.ACCURACY, 855_000, 850_000, 10_000)
        850000
    """
    metric = Metric(metric)
    higher = metric.higher_is_better
    top = SCORE_SCALE if higher else MAX_SCORE
    score = _integer("score", score, ValueError)
    previous_best = _integer("previous_best", previous_best, ProtocolError)
    step = _integer("step", step, ProtocolError)
    if not 0 <= score <= top:
        raise ValueError(f"a {metric.name} score is in [0, {top}] units, not {score}")
    if step < 1:
        raise ProtocolError(f"the Ladder's step is at least 1 unit, not {step}")
    if higher:
        if not 0 <= previous_best <= SCORE_SCALE:
            raise ProtocolError(f"a {metric.name} leaderboard value is in [0, {SCORE_SCALE}] units, not {previous_best}")
        improves = previous_best == NO_SCORE_HIGHER_IS_BETTER or score > previous_best + step
    else:
        if not 0 <= previous_best <= NO_SCORE_LOWER_IS_BETTER:
            raise ProtocolError(f"a {metric.name} leaderboard value is in [0, 2**64 - 1] units, not {previous_best}")
        improves = previous_best == NO_SCORE_LOWER_IS_BETTER or score < previous_best - step
    if not improves:
        return previous_best
    quotient, remainder = divmod(score, step)
    rounded = (quotient + (2 * remainder >= step)) * step
    return min(rounded, top)


def _integer(name: str, value: int, error: type[ValueError]) -> int:
    """``value`` as a Python int (numpy integers too), refusing bools, floats and anything else."""
    if isinstance(value, bool):
        raise error(f"{name} must be an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError as e:
        raise error(f"{name} must be an integer, not {type(value).__name__}") from e
