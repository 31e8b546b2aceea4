"""Rendered dataset lists are reused while the index stays at a block, and never served stale."""

from __future__ import annotations

import pytest

from sterling.gateway.cache import ResponseCache
from tests.gateway.conftest import Gateway, list_toy, unique_schema


def test_lru_reuses_and_evicts() -> None:
    cache = ResponseCache(max_entries=2)
    renders: list[str] = []

    def render(name: str) -> bytes:
        renders.append(name)
        return name.encode()

    assert cache.get_or_render("a", lambda: render("a")) == b"a"
    assert cache.get_or_render("a", lambda: render("again")) == b"a"
    cache.get_or_render("b", lambda: render("b"))
    cache.get_or_render("a", lambda: render("x"))  # a is now the most recent
    cache.get_or_render("c", lambda: render("c"))  # evicts b
    cache.get_or_render("b", lambda: render("b2"))
    assert renders == ["a", "b", "c", "b2"] and cache.hits == 2 and cache.misses == 4
    with pytest.raises(ValueError):
        ResponseCache(max_entries=0)


def test_the_dataset_list_is_cached_per_indexed_block_and_never_stale(gateway: Gateway) -> None:
    schema = unique_schema("cached")
    params = {"schema_hash": "0x" + schema.hash().hex()}
    first, _ = list_toy(gateway.net, 61, schema=schema, price=10**16, total=4.0)
    gateway.sync()
    cache = gateway.app.state.cache
    before = cache.hits
    one = gateway.client.get("/api/datasets", params=params).json()
    assert gateway.client.get("/api/datasets", params=params).json() == one and cache.hits == before + 1
    assert [d["id"] for d in one["items"]] == [first.dataset_id]
    second, _ = list_toy(gateway.net, 62, schema=schema, price=10**16, total=4.0)
    assert gateway.client.get("/api/datasets", params=params).json() == one  # not indexed yet: the index has not moved
    gateway.sync()
    two = gateway.client.get("/api/datasets", params=params).json()
    assert [d["id"] for d in two["items"]] == [second.dataset_id, first.dataset_id] and two["total"] == 2
