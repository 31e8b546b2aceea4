"""Chain reorganisations under the indexer, produced for real on anvil (``evm_snapshot`` /
``evm_revert``: the blocks after the snapshot are orphaned and new ones take their heights).

After a reorganisation deeper than its confirmations the indexer must hold exactly what an index
built anew from the canonical chain holds (nothing of the orphaned blocks stays); with enough
confirmations it never indexes the orphaned blocks at all. A gateway's cached answers are versioned
by ``(rollbacks, block)``, so the answer rendered before the rollback is not served after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from sqlalchemy import Integer, select

from marketplace.chain import Chain, anvil
from marketplace.contracts import MarketClient, RegistryClient, Terms, deploy
from oracle.index_db import BOOKKEEPING_TABLES, Base, Cursor, Dataset, IndexDatabase, IndexedBlock, cursor_key
from oracle.indexer import REORG_MEMORY, Indexer
from sterling.gateway.cache import index_version
from tests.postgres import index_url

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

EPS = 10**6


@dataclass
class Net:
    chain: Chain
    market: MarketClient
    registry: RegistryClient
    start_block: int
    governance: LocalAccount


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    with anvil() as chain:
        governance = chain.new_account()
        deployment = deploy(chain, governance)
        yield Net(chain, MarketClient(chain, deployment.market), RegistryClient(chain, deployment.registry), deployment.block, governance)


def _rpc(chain: Chain, method: str, *params: Any) -> Any:
    response = chain.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response["result"]


def _list(net: Net, name: str, price: int) -> int:
    provider = net.chain.new_account()
    dataset_id, _ = net.market.list_dataset(
        provider, content_hash=keccak(name.encode()), schema_hash=b"\x03" * 32, uri=f"blob://{name}",
        terms=Terms(price_per_job=price, max_epsilon_per_job=2 * EPS, total_epsilon_budget=10 * EPS, max_delta=10**13),
    )  # fmt: skip
    return int(dataset_id)


def _indexer(net: Net, db: IndexDatabase, **kwargs: Any) -> Indexer:
    return Indexer(db, market=net.market, registry=net.registry, start_block=net.start_block, batch_blocks=3, **kwargs)


def _rows(db: IndexDatabase) -> dict[str, list[dict[str, Any]]]:
    """Every table's rows but the cursor's and the remembered range ends, without surrogate ids."""
    tables: dict[str, list[dict[str, Any]]] = {}
    with db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name in BOOKKEEPING_TABLES:
                continue
            skip = {c.name for c in table.columns if c.name == "id" and isinstance(c.type, Integer) and c.autoincrement is True}
            rows = [{k: v for k, v in row._mapping.items() if k not in skip} for row in connection.execute(table.select())]
            tables[table.name] = sorted(rows, key=repr)
    return tables


def _rebuilt(net: Net, folder: Path, up_to: int) -> IndexDatabase:
    db = IndexDatabase(index_url(folder))
    db.create_schema()
    indexer = _indexer(net, db)
    while indexer.last_block() < up_to:
        indexer.poll_once()
    return db


def _datasets(db: IndexDatabase) -> dict[int, tuple[str, int]]:
    with db.session() as session:
        return {row.id: (row.content_hash, row.price_wei) for row in session.scalars(select(Dataset))}


def test_a_reorganisation_below_the_cursor_rolls_the_index_back_to_the_canonical_chain(net: Net, tmp_path: Path) -> None:
    db = IndexDatabase(index_url(tmp_path / "live"))
    db.create_schema()
    indexer = _indexer(net, db)
    before = _list(net, "kept", 100)
    indexer.poll_once()
    snapshot = _rpc(net.chain, "evm_snapshot")
    orphaned = [_list(net, f"orphaned-{i}", 200 + i) for i in range(3)]
    indexer.poll_once()
    orphaned_head = indexer.last_block()
    with db.session() as session:
        version_before = index_version(session, cursor_key(net.chain.chain_id, net.market.address, net.registry.address))
    assert set(_datasets(db)) == {before, *orphaned} and indexer.rollbacks == 0

    # the blocks after the snapshot are orphaned: other transactions take their ids and heights, and more
    assert _rpc(net.chain, "evm_revert", snapshot) is True
    canonical = [_list(net, f"canonical-{i}", 900 + i) for i in range(2)]
    assert canonical == orphaned[:2]  # the same ids, other datasets
    _rpc(net.chain, "anvil_mine", hex(orphaned_head - net.chain.w3.eth.block_number + 2))
    assert net.chain.w3.eth.block_number > orphaned_head

    indexer.poll_once()
    assert indexer.rollbacks == 1 and indexer.last_block() == net.chain.w3.eth.block_number
    datasets = _datasets(db)
    assert set(datasets) == {before, *canonical}
    assert datasets[canonical[0]] == ("0x" + keccak(b"canonical-0").hex(), 900)
    rebuilt = _rebuilt(net, tmp_path / "rebuilt", indexer.last_block())
    assert _rows(db) == _rows(rebuilt)
    with db.session() as session:
        cursor = session.get(Cursor, indexer.key)
        assert cursor is not None and cursor.rollbacks == 1
        assert cursor.last_block_hash == "0x" + bytes(net.chain.w3.eth.get_block(cursor.last_block)["hash"]).hex()
        version_after = index_version(session, indexer.key)
    assert version_after != version_before and version_after[0] == 1  # a cached answer of the orphaned index is not reused
    indexer.poll_once()
    assert indexer.rollbacks == 1  # nothing changed since: no second rollback
    rebuilt.close()
    db.close()


def test_confirmations_keep_a_shallow_reorganisation_out_of_the_index(net: Net, tmp_path: Path) -> None:
    db = IndexDatabase(index_url(tmp_path / "confirmed"))
    db.create_schema()
    indexer = _indexer(net, db, confirmations=4)
    _rpc(net.chain, "anvil_mine", hex(5))
    indexer.poll_once()
    snapshot = _rpc(net.chain, "evm_snapshot")
    orphaned = _list(net, "shallow-orphan", 500)
    indexer.poll_once()
    assert orphaned not in _datasets(db)  # one block deep: still within the confirmations
    assert _rpc(net.chain, "evm_revert", snapshot) is True
    canonical = _list(net, "shallow-canonical", 600)
    _rpc(net.chain, "anvil_mine", hex(6))
    indexer.poll_once()
    assert indexer.rollbacks == 0
    assert _datasets(db)[canonical] == ("0x" + keccak(b"shallow-canonical").hex(), 600)
    rebuilt = _rebuilt(net, tmp_path / "rebuilt", indexer.last_block())
    assert _rows(db) == _rows(rebuilt)
    rebuilt.close()
    db.close()


def test_the_index_remembers_the_last_range_ends_only(net: Net, tmp_path: Path) -> None:
    db = IndexDatabase(index_url(tmp_path / "memory"))
    db.create_schema()
    _rpc(net.chain, "anvil_mine", hex(REORG_MEMORY + 40))
    indexer = Indexer(db, market=net.market, registry=net.registry, start_block=net.start_block, batch_blocks=1)
    indexer.poll_once()
    with db.session() as session:
        remembered = sorted(session.scalars(select(IndexedBlock.block).where(IndexedBlock.cursor_key == indexer.key)))
    assert len(remembered) == REORG_MEMORY and remembered[-1] == indexer.last_block()
    assert remembered == list(range(indexer.last_block() - REORG_MEMORY + 1, indexer.last_block() + 1))
    db.close()
