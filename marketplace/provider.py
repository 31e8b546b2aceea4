"""The provider workflow: package → encrypt → store → wrap the key to the key manager → list."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Protocol

from eth_account.signers.local import LocalAccount
from eth_utils import to_canonical_address

from enclave_worker.trusted import dataformat, keywrap
from enclave_worker.trusted.dataset import DatasetPackage, canonical_json
from enclave_worker.trusted.receipt import Deposit, sign_deposit

from .blobstore import BlobAccess
from .chain import TxResult
from .contracts import DatasetId, MarketClient, RegistryClient, Terms
from .datasheet import Datasheet

logger = logging.getLogger(__name__)

LOCAL_BLOB_URI = "sterling-blob:"
"""Where the ciphertext lives: a Sterling blob store, looked up by the listing's content hash.
Short on purpose (one storage slot); an S3 or HTTPS location would go here instead."""


class KeyDepository(Protocol):
    """Where a provider deposits its wrapped data key: a key manager enclave's host."""

    @property
    def signer(self) -> str: ...

    def deposit(self, content_hash: bytes, wrapped_key: bytes, *, provider: str, signature: bytes) -> None:
        """Keep ``provider``'s wrapped key for ``content_hash``; ``signature`` is its EIP-712 ``Deposit``
        (:func:`signed_deposit`).

        Raises:
            DepositSignatureInvalid: not signed by ``provider`` for this chain, market and key manager.
            DepositExists: ``provider`` deposited a key for ``content_hash`` already (it is kept).
            KeyUnwrapFailed: the key does not open for this key manager.
        """
        ...


def signed_deposit(
    provider: LocalAccount, content_hash: bytes, wrapped_key: bytes, *, key_manager: str, chain_id: int, market: str
) -> bytes:
    """``provider``'s EIP-712 signature of the deposit of ``wrapped_key`` for ``content_hash`` with
    ``key_manager`` (its signer address), under the market contract's domain on ``chain_id``."""
    statement = Deposit(content_hash=content_hash, wrapped_key=wrapped_key, key_manager=to_canonical_address(key_manager))
    return sign_deposit(provider, statement, chain_id=chain_id, market=to_canonical_address(market))


@dataclass(frozen=True)
class ListedDataset:
    """A dataset after listing."""

    dataset_id: DatasetId
    content_hash: bytes
    schema_hash: bytes
    ciphertext_bytes: int
    tx: TxResult
    datasheet_hash: bytes | None = None
    """The SHA-256 of the datasheet published with the listing (``setDatasheet``), if one was."""


def list_dataset(
    package: DatasetPackage,
    provider: LocalAccount,
    *,
    terms: Terms,
    market: MarketClient,
    registry: RegistryClient,
    key_manager: KeyDepository,
    blobs: BlobAccess,
    allowed_consumers: tuple[str, ...] = (),
    allowed_models: tuple[bytes, ...] = (),
    uri: str = LOCAL_BLOB_URI,
    datasheet: Datasheet | None = None,
) -> ListedDataset:
    """Encrypt ``package`` with a fresh data key, store it, hand the wrapped key to the key manager, list it.

    Args:
        datasheet: the listing's public description (docs/datasheets.md); checked against the
            package (its columns, label and row count) before anything is sent, stored next to
            the schema and put on-chain with ``setDatasheet`` right after the listing.
        allowed_consumers: the only accounts that may buy; empty for anyone.
        allowed_models: hashes of the only model specs jobs may train on it; empty for any.
        uri: where consumers' workers fetch the ciphertext; the content hash names the object.

    The data key is wrapped to the key manager's *attested* key as recorded in the enclave
    registry (never to a key the host merely claims), bound to the ciphertext's content hash, and
    deposited with the provider's EIP-712 signature: the key manager releases only the deposit of
    the listing's on-chain provider.

    Example:
        >>> listed = list_dataset(pkg, hospital, terms=terms, market=market, registry=registry,
        ...                       key_manager=km, blobs=blobs)  # doctest: +SKIP
    """
    if datasheet is not None:
        datasheet.check_fits(package.schema, rows=package.rows)
    key = dataformat.new_data_key()
    uid = hashlib.sha256(provider.address.encode() + os.urandom(32)).digest()
    ciphertext = dataformat.encrypt_bytes(package.to_bytes(), key, kind=dataformat.Kind.DATASET, context=uid)
    content_hash = bytes.fromhex(blobs.put(ciphertext))
    schema_hash = bytes.fromhex(blobs.put(canonical_json(package.schema.to_json())))
    assert schema_hash == package.schema.hash()
    km_key = registry.active_key_manager_key(key_manager.signer)
    wrapped = keywrap.wrap(key, km_key, info=keywrap.datakey_info(content_hash))
    signature = signed_deposit(
        provider, content_hash, wrapped, key_manager=key_manager.signer, chain_id=market.chain.chain_id, market=market.address
    )
    key_manager.deposit(content_hash, wrapped, provider=provider.address, signature=signature)
    dataset_id, tx = market.list_dataset(
        provider,
        content_hash=content_hash,
        schema_hash=schema_hash,
        uri=uri,
        terms=terms,
        allowed_consumers=allowed_consumers,
        allowed_models=allowed_models,
    )
    logger.info("listed dataset %d (%d rows, content %s)", dataset_id, package.rows, content_hash.hex())
    datasheet_hash = None
    if datasheet is not None:
        datasheet_hash = bytes.fromhex(blobs.put(datasheet.to_bytes()))
        market.set_datasheet(provider, dataset_id, datasheet_hash)
        logger.info("published datasheet %s for dataset %d (%r)", datasheet_hash.hex(), dataset_id, datasheet.title)
    return ListedDataset(dataset_id, content_hash, schema_hash, len(ciphertext), tx, datasheet_hash)
