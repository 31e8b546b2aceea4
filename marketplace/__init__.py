"""Sterling's Python package: chain access, contract clients, provider and consumer workflows.

Example:
    >>> from marketplace import BlobStore, Consumer, Terms, list_dataset  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .blobstore import BlobStore
    from .chain import Chain, TxResult, Wei
    from .consumer import Consumer, CreatedJob
    from .contracts import (
        DatasetId,
        DatasetRecord,
        DatasetStatus,
        Deployment,
        JobId,
        JobRecord,
        JobStatus,
        MarketClient,
        RegistryClient,
        Terms,
        delta_units,
        deploy,
        epsilon_units,
    )
    from .errors import SterlingError
    from .model_market import ModelMarketClient, ModelTerms
    from .provider import ListedDataset, list_dataset
    from .serving import InferenceClient, list_job_model, list_model, model_weights

_EXPORTS: dict[str, str] = {
    "BlobStore": "blobstore",
    "Chain": "chain",
    "TxResult": "chain",
    "Wei": "chain",
    "Consumer": "consumer",
    "CreatedJob": "consumer",
    "DatasetId": "contracts",
    "DatasetRecord": "contracts",
    "DatasetStatus": "contracts",
    "Deployment": "contracts",
    "JobId": "contracts",
    "JobRecord": "contracts",
    "JobStatus": "contracts",
    "MarketClient": "contracts",
    "RegistryClient": "contracts",
    "Terms": "contracts",
    "delta_units": "contracts",
    "deploy": "contracts",
    "epsilon_units": "contracts",
    "SterlingError": "errors",
    "ListedDataset": "provider",
    "list_dataset": "provider",
    "ModelMarketClient": "model_market",
    "ModelTerms": "model_market",
    "InferenceClient": "serving",
    "list_job_model": "serving",
    "list_model": "serving",
    "model_weights": "serving",
}

__all__ = [
    "BlobStore",
    "Chain",
    "Consumer",
    "CreatedJob",
    "DatasetId",
    "DatasetRecord",
    "DatasetStatus",
    "Deployment",
    "InferenceClient",
    "JobId",
    "JobRecord",
    "JobStatus",
    "ListedDataset",
    "MarketClient",
    "ModelMarketClient",
    "ModelTerms",
    "RegistryClient",
    "SterlingError",
    "Terms",
    "TxResult",
    "Wei",
    "delta_units",
    "deploy",
    "epsilon_units",
    "list_dataset",
    "list_job_model",
    "list_model",
    "model_weights",
]


def __getattr__(name: str) -> Any:
    """Import the public API on first use, so light submodules (errors, config) stay light."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'marketplace' has no attribute {name!r}")
