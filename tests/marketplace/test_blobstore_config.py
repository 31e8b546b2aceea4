"""Blob store integrity and configuration loading."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from marketplace.blobstore import BlobStore
from marketplace.config import get_settings
from marketplace.errors import BlobNotFound, CiphertextTampered, ConfigError


def test_blobs_are_content_addressed_and_verified(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"ciphertext bytes")
    assert store.get(digest) == b"ciphertext bytes"
    assert store.put(b"ciphertext bytes") == digest
    assert store.put_stream(io.BytesIO(b"x" * 3_000_000)) == store.put(b"x" * 3_000_000)
    store.path(digest).write_bytes(b"altered")
    with pytest.raises(CiphertextTampered):
        store.get(digest)
    with pytest.raises(BlobNotFound):
        store.get("ab" * 32)
    with pytest.raises(ValueError):
        store.get("../../etc/passwd")


def test_brownie_config_names_the_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STERLING_NETWORK", "STERLING_NETWORKS", "STERLING_RPC_URL", "STERLING_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = get_settings()
    assert settings.networks["embedded"].kind == "embedded"
    assert settings.networks["anvil"].hardfork == "prague"
    assert settings.chain_network.name == "anvil"
    with pytest.raises(ConfigError, match="unknown network 'mainnet-typo'"):
        get_settings(network="mainnet-typo")
