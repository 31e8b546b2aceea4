"""On-chain enclave roles (``EnclaveRegistry.ROLE_*``)."""

from __future__ import annotations

import enum


class Role(enum.IntEnum):
    """What an enclave is registered to do."""

    TRAINER = 1
    KEY_MANAGER = 2
