"""Datasets that ship inside installed packages, in Sterling's canonical form (nothing is downloaded).

- ``breast_cancer``: scikit-learn's Wisconsin breast-cancer table (569 rows, 30 features, 2 classes);
- ``digits``: scikit-learn's 8x8 handwritten digits as images ``[1, 8, 8]`` scaled to [0, 1] (1,797 rows, 10 classes);
- ``actg175``: the ACTG 175 HIV clinical-trial table shipped with lifelines (2,139 patients,
  baseline covariates only), labelled by whether the trial's composite event occurred (``cens``);
- ``credit_scoring``: a synthetic, unscaled credit-scoring table (age, income, debt ratio, late
  payments; about 13 % defaults), optionally with the provider's declared feature bounds.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from enclave_worker.trusted.dataset import DatasetPackage, Schema

ACTG175_FEATURES: tuple[str, ...] = (
    "age", "wtkg", "hemo", "homo", "drugs", "karnof", "oprior", "z30", "zprior", "preanti",
    "race", "gender", "str2", "strat", "symptom", "treat", "offtrt", "cd40", "cd80",
    "arm_zdv", "arm_zdv_ddi", "arm_zdv_zal", "arm_ddi",
)  # fmt: skip
"""Baseline covariates only; follow-up measurements (cd420, cd496, cd820, days, r) are left out
because they are recorded after randomisation and would leak the outcome."""


def breast_cancer() -> DatasetPackage:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    schema = Schema(
        task="classification",
        feature_names=tuple(str(n) for n in bunch.feature_names),
        feature_shape=(bunch.data.shape[1],),
        class_names=tuple(str(n) for n in bunch.target_names),
    )
    return DatasetPackage(bunch.data.astype(np.float32), bunch.target.astype(np.int64), schema)


def digits() -> DatasetPackage:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    schema = Schema(
        task="classification",
        feature_names=tuple(f"pixel_{r}_{c}" for r in range(8) for c in range(8)),
        feature_shape=(1, 8, 8),
        class_names=tuple(str(d) for d in range(10)),
    )
    return DatasetPackage(images, bunch.target.astype(np.int64), schema)


def actg175() -> DatasetPackage:
    """The ACTG 175 table from the lifelines package (needs ``lifelines`` installed)."""
    import csv

    path = resources.files("lifelines.datasets").joinpath("ACTG175.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    features = []
    labels = []
    for row in rows:
        arm = int(row["arms"])
        base = [float(row[name]) for name in ACTG175_FEATURES[:19]]
        features.append(base + [1.0 if arm == k else 0.0 for k in range(4)])
        labels.append(int(row["cens"]))
    schema = Schema(task="classification", feature_names=ACTG175_FEATURES, feature_shape=(len(ACTG175_FEATURES),),
                    class_names=("no_event", "event"))
    return DatasetPackage(np.asarray(features, dtype=np.float32), np.asarray(labels, dtype=np.int64), schema)


CREDIT_SCORING_FEATURES: tuple[str, ...] = ("age", "income", "debt_ratio", "late_payments")
CREDIT_SCORING_BOUNDS: dict[str, tuple[float, float]] = {
    "age": (18, 100),
    "income": (0, 500_000),
    "debt_ratio": (0, 2),
    "late_payments": (0, 24),
}
"""Public bounds a lender would declare for the credit table: the ranges the columns may take
(years, currency units per year, debt over income, a count), not statistics of its rows."""
_CREDIT_WEIGHTS = np.array([-4.0, -30.0, 10.0, 16.0])
"""Log-odds of default per unit of each feature scaled by :data:`CREDIT_SCORING_BOUNDS` to [-1, 1]:
older, richer borrowers default less, indebted and late ones more."""
_CREDIT_BIAS = -9.39
"""Puts the default rate at about 13 % over the generated population."""


def credit_scoring(rows: int = 20_000, seed: int = 0, *, declare_bounds: bool = False) -> DatasetPackage:
    """A synthetic credit-scoring table in raw units, labelled ``repaid`` (0) or ``default`` (1).

    Columns: ``age`` (whole years, about 20-80), ``income`` (whole currency units a year,
    log-normal around 50,000), ``debt_ratio`` (0-1.5, three decimals), ``late_payments`` (a
    count, 0-12). Each row defaults with probability ``sigmoid(bias + w · s)`` where ``s`` is the
    row scaled to [-1, 1] by :data:`CREDIT_SCORING_BOUNDS`: about 13 % default, and the Bayes
    classifier is right on about 94 % of rows, so a model that sees scaled features can beat the
    base rate clearly, while DP-SGD on the raw columns (income in tens of thousands) learns nothing.

    Args:
        declare_bounds: put :data:`CREDIT_SCORING_BOUNDS` in the schema, as the provider would.
    """
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    rng = np.random.default_rng(seed)
    age = np.clip(np.round(rng.normal(45.0, 13.0, rows)), 20, 80)
    income = np.clip(np.round(rng.lognormal(np.log(50_000.0), 0.5, rows)), 5_000, 450_000)
    debt_ratio = np.clip(np.round(rng.gamma(2.0, 0.2, rows), 3), 0.0, 1.5)
    late_payments = np.minimum(rng.poisson(1.0, rows), 12).astype(np.float64)
    raw = np.stack([age, income, debt_ratio, late_payments], axis=1)
    low = np.array([CREDIT_SCORING_BOUNDS[n][0] for n in CREDIT_SCORING_FEATURES], dtype=np.float64)
    high = np.array([CREDIT_SCORING_BOUNDS[n][1] for n in CREDIT_SCORING_FEATURES], dtype=np.float64)
    scaled = (raw - (low + high) / 2) / ((high - low) / 2)
    p_default = 1.0 / (1.0 + np.exp(-(_CREDIT_BIAS + scaled @ _CREDIT_WEIGHTS)))
    labels = (rng.random(rows) < p_default).astype(np.int64)
    schema = Schema(
        task="classification",
        feature_names=CREDIT_SCORING_FEATURES,
        feature_shape=(len(CREDIT_SCORING_FEATURES),),
        class_names=("repaid", "default"),
        feature_bounds=tuple(CREDIT_SCORING_BOUNDS[n] for n in CREDIT_SCORING_FEATURES) if declare_bounds else None,
    )
    return DatasetPackage(raw.astype(np.float32), labels, schema)
