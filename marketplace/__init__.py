"""Sterling's Python package: chain access, contract clients, provider and consumer workflows.

Example:
    >>> from marketplace import BlobStore, Consumer, Terms, list_dataset  # doctest: +SKIP
"""

from .blobstore import BlobStore
from .chain import Chain, TxResult, Wei
from .consumer import Consumer, CreatedJob
from .contracts import (
    DatasetId,
    DatasetRecord,
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
from .provider import ListedDataset, list_dataset

__all__ = [
    "BlobStore",
    "Chain",
    "Consumer",
    "CreatedJob",
    "DatasetId",
    "DatasetRecord",
    "Deployment",
    "JobId",
    "JobRecord",
    "JobStatus",
    "ListedDataset",
    "MarketClient",
    "RegistryClient",
    "SterlingError",
    "Terms",
    "TxResult",
    "Wei",
    "delta_units",
    "deploy",
    "epsilon_units",
    "list_dataset",
]
