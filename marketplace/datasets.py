"""Datasets that ship inside installed packages, in Sterling's canonical form (nothing is downloaded).

- ``breast_cancer``: scikit-learn's Wisconsin breast-cancer table (569 rows, 30 features, 2 classes);
- ``digits``: scikit-learn's 8x8 handwritten digits as images ``[1, 8, 8]`` scaled to [0, 1] (1,797 rows, 10 classes);
- ``actg175``: the ACTG 175 HIV clinical-trial table shipped with lifelines (2,139 patients,
  baseline covariates only), labelled by whether the trial's composite event occurred (``cens``);
  ``actg175_survival``: the same patients, time to that event (discrete-time survival);
  ``actg175_cd_counts``: the CD4 and CD8 counts at 20 weeks (multi-output regression);
- ``diabetes``: scikit-learn's diabetes table (442 patients) as a regression, in raw units with bounds;
- ``flchain``: scikit-survival's free-light-chain study (7,874 people), time to death (survival);
- ``synthetic_images``: generated 32x32 colour images, 10 classes (no image set of that size ships here);
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


def _actg175_rows() -> tuple[np.ndarray, list[dict[str, str]]]:
    """The ACTG 175 table's baseline covariates (:data:`ACTG175_FEATURES`, the arm one-hot) and its raw rows."""
    import csv

    path = resources.files("lifelines.datasets").joinpath("ACTG175.csv")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    features = []
    for row in rows:
        arm = int(row["arms"])
        base = [float(row[name]) for name in ACTG175_FEATURES[:19]]
        features.append(base + [1.0 if arm == k else 0.0 for k in range(4)])
    return np.asarray(features, dtype=np.float32), rows


def actg175() -> DatasetPackage:
    """The ACTG 175 table from the lifelines package (needs ``lifelines`` installed)."""
    features, rows = _actg175_rows()
    labels = np.asarray([int(row["cens"]) for row in rows], dtype=np.int64)
    schema = Schema(task="classification", feature_names=ACTG175_FEATURES, feature_shape=(len(ACTG175_FEATURES),),
                    class_names=("no_event", "event"))
    return DatasetPackage(features, labels, schema)


ACTG175_BOUNDS: dict[str, tuple[float, float]] = {
    "age": (0, 100), "wtkg": (30, 160), "karnof": (0, 100), "preanti": (0, 3000), "cd40": (0, 1500), "cd80": (0, 6000),
    "race": (0, 1), "gender": (0, 1), "hemo": (0, 1), "homo": (0, 1), "drugs": (0, 1), "oprior": (0, 1), "z30": (0, 1),
    "zprior": (0, 1), "str2": (0, 1), "strat": (1, 3), "symptom": (0, 1), "treat": (0, 1), "offtrt": (0, 1),
    "arm_zdv": (0, 1), "arm_zdv_ddi": (0, 1), "arm_zdv_zal": (0, 1), "arm_ddi": (0, 1),
}  # fmt: skip
"""Ranges the trial's protocol gives each baseline covariate (years, kg, Karnofsky score, days of
prior antiretroviral therapy, cells/mm³, indicators): public declarations, not statistics of the rows."""
ACTG175_TIME_BINS: tuple[float, ...] = tuple(float(d) for d in range(100, 1300, 100))
"""Twelve 100-day follow-up intervals (the trial followed patients for up to 1,231 days)."""


def actg175_survival() -> DatasetPackage:
    """ACTG 175 as a discrete-time survival task: time to the composite event (``days``, event =
    ``cens``: a CD4 decline of at least 50 %, AIDS or death; 24 % observed) from the baseline
    covariates, in :data:`ACTG175_TIME_BINS`, with :data:`ACTG175_BOUNDS` declared."""
    features, rows = _actg175_rows()
    labels = np.asarray([[float(row["days"]), float(row["cens"])] for row in rows], dtype=np.float32)
    schema = Schema(task="survival", feature_names=ACTG175_FEATURES, feature_shape=(len(ACTG175_FEATURES),),
                    feature_bounds=tuple(ACTG175_BOUNDS[n] for n in ACTG175_FEATURES), time_bins=ACTG175_TIME_BINS)
    return DatasetPackage(features, labels, schema)


ACTG175_CD_TARGETS: tuple[str, ...] = ("cd420", "cd820")
ACTG175_CD_BOUNDS: tuple[tuple[float, float], ...] = ((0, 1500), (0, 6000))


def actg175_cd_counts() -> DatasetPackage:
    """ACTG 175 as a multi-output regression: the CD4 and CD8 counts at 20 ± 5 weeks (cells/mm³)
    from the baseline covariates, with :data:`ACTG175_BOUNDS` and the counts' declared ranges."""
    features, rows = _actg175_rows()
    labels = np.asarray([[float(row[t]) for t in ACTG175_CD_TARGETS] for row in rows], dtype=np.float32)
    schema = Schema(task="regression", feature_names=ACTG175_FEATURES, feature_shape=(len(ACTG175_FEATURES),),
                    feature_bounds=tuple(ACTG175_BOUNDS[n] for n in ACTG175_FEATURES), target_names=ACTG175_CD_TARGETS,
                    target_bounds=ACTG175_CD_BOUNDS)  # fmt: skip
    return DatasetPackage(features, labels, schema)


DIABETES_BOUNDS: dict[str, tuple[float, float]] = {
    "age": (18, 90), "sex": (1, 2), "bmi": (15, 50), "bp": (50, 150), "s1": (80, 350), "s2": (30, 260),
    "s3": (15, 110), "s4": (1, 10), "s5": (3, 7), "s6": (50, 140),
}  # fmt: skip
"""Physiological ranges of scikit-learn's diabetes covariates in their raw units (years, sex code,
kg/m², mm Hg, serum measurements): declared, not read from the rows."""
DIABETES_TARGET_BOUNDS = (0.0, 400.0)
"""The disease-progression score one year after baseline (25–346 in the table)."""


def diabetes() -> DatasetPackage:
    """scikit-learn's diabetes table (442 patients, 10 baseline covariates in raw units) as a
    regression of the disease progression one year later, with :data:`DIABETES_BOUNDS` declared."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False)
    names = tuple(str(n) for n in bunch.feature_names)
    schema = Schema(task="regression", feature_names=names, feature_shape=(len(names),),
                    feature_bounds=tuple(DIABETES_BOUNDS[n] for n in names), target_names=("progression",),
                    target_bounds=(DIABETES_TARGET_BOUNDS,))  # fmt: skip
    return DatasetPackage(bunch.data.astype(np.float32), bunch.target.astype(np.float32)[:, None], schema)


FLCHAIN_FEATURES: tuple[str, ...] = (
    "age", "sex_male", "kappa", "lambda", "creatinine", "creatinine_missing", "mgus",
    *(f"flc_grp_{g}" for g in range(1, 11)),
)  # fmt: skip
FLCHAIN_BOUNDS: dict[str, tuple[float, float]] = {
    "age": (50, 105), "kappa": (0, 25), "lambda": (0, 30), "creatinine": (0, 12),
}
"""Declared ranges of flchain's continuous columns (years; mg/dL for the free light chains and
creatinine); the indicator columns are 0 or 1."""
FLCHAIN_TIME_BINS: tuple[float, ...] = tuple(round(365.25 * year, 2) for year in range(1, 15))
"""Yearly intervals over the study's 14 years of follow-up (days)."""


FLCHAIN_CATEGORICAL_FEATURES: tuple[str, ...] = ("age", "sex", "kappa", "lambda", "creatinine", "creatinine_missing", "mgus", "flc_grp")
FLCHAIN_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sex", ("F", "M")), ("mgus", ("no", "yes")), ("flc_grp", tuple(str(g) for g in range(1, 11))),
)  # fmt: skip
"""flchain's categorical columns with their vocabularies, for the embedding variant (:func:`flchain`)."""


def flchain(*, categorical: bool = False) -> DatasetPackage:
    """The flchain study (scikit-survival; 7,874 residents of Olmsted County, 28 % died during
    follow-up) as a discrete-time survival task: time to death from age, sex, the serum free light
    chains (kappa, lambda and their decile group) and creatinine, in yearly intervals.

    ``chapter`` (the cause of death) is left out: it is known only for those who died and would
    leak the outcome; ``sample.yr`` is administrative. Creatinine is missing for 1,350 rows: they
    get 0 and ``creatinine_missing`` = 1 (no statistic of the rows is imputed).

    Args:
        categorical: sex, mgus and the light-chain decile group as categorical features (category
            indices, :data:`FLCHAIN_CATEGORIES` declared in the schema: the model learns an
            embedding per category) instead of indicator columns."""
    from sksurv.datasets import load_flchain

    x, y = load_flchain()
    creatinine = x["creatinine"].to_numpy(dtype=np.float64)
    missing = np.isnan(creatinine)
    group = x["flc.grp"].astype(int).to_numpy()
    columns = [
        x["age"].to_numpy(dtype=np.float64), (x["sex"] == "M").to_numpy(dtype=np.float64),
        x["kappa"].to_numpy(dtype=np.float64), x["lambda"].to_numpy(dtype=np.float64),
        np.where(missing, 0.0, creatinine), missing.astype(np.float64), (x["mgus"] == "yes").to_numpy(dtype=np.float64),
        *((group == g).astype(np.float64) for g in range(1, 11)),
    ]  # fmt: skip
    labels = np.stack([y["futime"].astype(np.float64), y["death"].astype(np.float64)], axis=1).astype(np.float32)
    if categorical:
        columns = [*columns[:7], (group - 1).astype(np.float64)]  # sex and mgus are 0/1 already: the indices of F/M, no/yes
        names, categories = FLCHAIN_CATEGORICAL_FEATURES, FLCHAIN_CATEGORIES
        declared = dict(categories)
        bounds = tuple(None if n in declared else FLCHAIN_BOUNDS.get(n, (0, 1)) for n in names)
    else:
        names, categories = FLCHAIN_FEATURES, ()
        bounds = tuple(FLCHAIN_BOUNDS.get(n, (0, 1)) for n in names)
    features = np.stack(columns, axis=1).astype(np.float32)
    schema = Schema(task="survival", feature_names=names, feature_shape=(len(names),), feature_bounds=bounds,
                    time_bins=FLCHAIN_TIME_BINS, categories=categories)  # fmt: skip
    return DatasetPackage(features, labels, schema)


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


SYNTHETIC_IMAGE_CLASSES: tuple[str, ...] = tuple(f"pattern_{k}" for k in range(10))
CLASS_STRENGTH, OWN_STRENGTH, PIXEL_NOISE, MAX_SHIFT = 0.2, 0.15, 0.2, 16


def synthetic_images(rows: int = 50_000, seed: int = 0, *, size: int = 32) -> DatasetPackage:
    """A synthetic colour image set ``[rows, 3, size, size]`` in [0, 1] with 10 classes, for
    measuring and testing image networks at CIFAR-10's size (50,000 rows of 32x32x3).

    No image set of that size ships inside an installable package here (scikit-learn's digits are
    1,797 grey 8x8 images) and nothing may be downloaded, so the rows are generated: each class is
    a fixed smooth colour pattern (a sum of four random plane waves per channel, drawn once from
    ``seed``); an image is its class's pattern shifted by up to :data:`MAX_SHIFT` pixels in each
    direction, its contrast scaled by a factor in [0.6, 1.4], plus coarse noise of its own (one
    value per 4x4 block) and pixel noise. The shifts make the classes hard for a linear model on
    the pixels (0.48 accuracy from 5,000 rows) and easy for a convolutional network, which sees
    the pattern wherever it lies.

    Rows are generated in blocks of 4,096, so 50,000 take about 0.6 GB (the float32 features) and
    a few seconds.
    """
    if rows < 1 or size < 8:
        raise ValueError(f"rows must be positive and size at least 8, got rows={rows}, size={size}")
    rng = np.random.default_rng(seed)
    classes = len(SYNTHETIC_IMAGE_CLASSES)
    grid = np.arange(size + MAX_SHIFT, dtype=np.float64)  # room for the shifts
    yy, xx = np.meshgrid(grid, grid, indexing="ij")

    def waves(count: int, source: np.random.Generator) -> np.ndarray:
        """``count`` smooth patterns ``[count, 3, size + MAX_SHIFT, size + MAX_SHIFT]``, values about in [-1, 1]."""
        freq = source.uniform(0.05, 0.35, (count, 3, 4, 2)) * source.choice([-1.0, 1.0], (count, 3, 4, 2))
        phase = source.uniform(0, 2 * np.pi, (count, 3, 4))
        arg = freq[..., 0, None, None] * yy + freq[..., 1, None, None] * xx + phase[..., None, None]
        summed: np.ndarray = np.cos(arg).sum(axis=2) / 2.0
        return summed

    templates = waves(classes, rng).astype(np.float32)
    labels = rng.integers(0, classes, rows).astype(np.int64)
    features = np.empty((rows, 3, size, size), dtype=np.float32)
    chans = np.arange(3)[None, :, None, None]
    coarse = size // 4
    for start in range(0, rows, 4096):
        end = min(rows, start + 4096)
        n = end - start
        dy, dx = rng.integers(0, MAX_SHIFT + 1, n), rng.integers(0, MAX_SHIFT + 1, n)
        rows_idx = (dy[:, None] + np.arange(size))[:, None, :, None]
        cols_idx = (dx[:, None] + np.arange(size))[:, None, None, :]
        image = templates[labels[start:end, None, None, None], chans, rows_idx, cols_idx]
        image *= rng.uniform(0.6, 1.4, (n, 1, 1, 1)).astype(np.float32) * CLASS_STRENGTH
        # The image's own pattern: coarse noise (a value per 4x4 block), and pixel noise on top.
        image += np.repeat(np.repeat(rng.standard_normal((n, 3, coarse, coarse), dtype=np.float32), 4, axis=2), 4, axis=3) * OWN_STRENGTH
        image += rng.standard_normal((n, 3, size, size), dtype=np.float32) * PIXEL_NOISE
        image += 0.5
        np.clip(image, 0.0, 1.0, out=features[start:end])
    schema = Schema(
        task="classification",
        feature_names=tuple(f"{c}_{r}_{k}" for c in ("red", "green", "blue") for r in range(size) for k in range(size)),
        feature_shape=(3, size, size),
        class_names=SYNTHETIC_IMAGE_CLASSES,
    )
    return DatasetPackage(features, labels, schema)
