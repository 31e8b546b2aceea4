"""The enclave measurement: a reproducible hash of the trusted code and its pinned dependencies.

Formula (version 1)::

    sha256( "sterling-measurement/v1\\n"
            || for each trusted file, sorted by its path relative to the repository root:
                 path || "\\0" || hex(sha256(file bytes)) || "\\n"
            || for each pinned dependency, sorted by name: name || "==" || version || "\\n"
            || "python==" || major.minor || "\\n" )

The trusted files are ``enclave_worker/__init__.py`` (imported when the trusted package loads)
and every ``*.py`` under ``enclave_worker/trusted/``. Changing one byte of them, or one pinned
version, changes the measurement, and key managers refuse the new code until governance approves
it on-chain. In simulation the :class:`~enclave_worker.sim_platform.SimPlatform` computes it, as a
CPU would measure the loaded image; on AWS Nitro it is derived from PCR0-2 instead.
"""

from __future__ import annotations

import hashlib
import sys
from importlib import metadata
from pathlib import Path

TRUSTED_DEPENDENCIES: dict[str, str] = {
    "cbor2": "cbor2",
    "coincurve": "coincurve",
    "cryptography": "cryptography",
    "eth-account": "eth_account",
    "eth-keys": "eth_keys",
    "eth-utils": "eth_utils",
    "numpy": "numpy",
    "opacus": "opacus",
    "opendp": "opendp",
    "pydantic": "pydantic",
    "safetensors": "safetensors",
    "torch": "torch",
}
"""The third-party distributions the trusted code imports (distribution name → import name).

The one list: the measurement pins these versions, and the layer test (``tests/test_layers.py``)
refuses any trusted import outside the standard library and these import names."""

PACKAGE_ROOT = Path(__file__).resolve().parent


def trusted_files(package_root: Path = PACKAGE_ROOT) -> list[Path]:
    """The files the measurement covers, in measurement order."""
    files = [package_root / "__init__.py", *sorted((package_root / "trusted").rglob("*.py"))]
    return sorted(files, key=lambda p: p.relative_to(package_root.parent).as_posix())


def dependency_versions() -> dict[str, str]:
    """Installed versions of the trusted part's dependencies."""
    return {name: metadata.version(name) for name in sorted(TRUSTED_DEPENDENCIES)}


def measure(package_root: Path = PACKAGE_ROOT, *, dependencies: dict[str, str] | None = None) -> bytes:
    """Compute the 32-byte measurement of the trusted code at ``package_root``."""
    h = hashlib.sha256(b"sterling-measurement/v1\n")
    for path in trusted_files(package_root):
        rel = path.relative_to(package_root.parent).as_posix()
        h.update(rel.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    deps = dependency_versions() if dependencies is None else dependencies
    for name in sorted(deps):
        h.update(f"{name}=={deps[name]}\n".encode())
    h.update(f"python=={sys.version_info.major}.{sys.version_info.minor}\n".encode())
    return h.digest()
