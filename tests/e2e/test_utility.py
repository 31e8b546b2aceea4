"""Utility goals, measured on the consumer's held-out data (see docs/models.md for the figures)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from enclave_worker.trusted.dataset import DatasetPackage, join
from enclave_worker.trusted.models import ModelSpec
from enclave_worker.trusted.training import train_dp
from marketplace.local_training import predict, train_non_private
from marketplace.datasets import digits
from sterling.demo import consumer_spec, hospital_shards


@pytest.mark.slow
def test_breast_cancer_mlp_at_epsilon_1_is_within_5_points_of_non_private() -> None:
    dp, plain = [], []
    for seed in (1, 2, 3):
        shards, x_val, y_val = hospital_shards(seed)
        data, spec = join(shards), consumer_spec(x_val, seed)
        dp.append((predict(train_dp(spec, data, epsilon=1.0, delta=1e-5, noise_seed=seed).model, x_val) == y_val).mean())
        plain.append((predict(train_non_private(spec, data), x_val) == y_val).mean())
    assert np.mean(dp) >= np.mean(plain) - 0.05, (dp, plain)


DIGITS_CNN = {
    "architecture": "cnn", "channels": [16, 32], "hidden_sizes": [64], "activation": "tanh",
    "epochs": 40, "batch_size": 256, "learning_rate": 0.01, "max_grad_norm": 1.0,
}


@pytest.mark.slow
def test_digits_cnn_at_epsilon_3_reaches_90_percent() -> None:
    images = digits()
    x_train, x_val, y_train, y_val = train_test_split(images.features, images.labels, test_size=0.2, stratify=images.labels, random_state=0)
    data = DatasetPackage(x_train, y_train, images.schema)
    for seed in (1, 2):
        result = train_dp(ModelSpec.model_validate({**DIGITS_CNN, "seed": seed}), data, epsilon=3.0, delta=1e-5, noise_seed=seed)
        assert result.epsilon_spent <= 3.0
        assert (predict(result.model, x_val) == y_val).mean() >= 0.90
