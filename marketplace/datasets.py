"""Datasets that ship inside installed packages, in Sterling's canonical form (nothing is downloaded).

- ``breast_cancer``: scikit-learn's Wisconsin breast-cancer table (569 rows, 30 features, 2 classes);
- ``digits``: scikit-learn's 8x8 handwritten digits as images ``[1, 8, 8]`` scaled to [0, 1] (1,797 rows, 10 classes);
- ``actg175``: the ACTG 175 HIV clinical-trial table shipped with lifelines (2,139 patients,
  baseline covariates only), labelled by whether the trial's composite event occurred (``cens``).
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
