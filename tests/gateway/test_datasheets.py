"""Datasheets: published, on-chain by hash, searched, sorted, paged, shown with the schema's declared bounds; refused when bad."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from eth_account.signers.local import LocalAccount
from sqlalchemy import delete

from enclave_worker.trusted.dataset import DatasetPackage, Schema
from marketplace.datasheet import Datasheet, InvalidDatasheet, json_schema
from marketplace.errors import ContractReverted
from marketplace.provider import ListedDataset, list_dataset
from oracle.index_db import DatasheetDocument, DatasheetTag
from tests.conftest import toy_package, toy_terms
from tests.gateway.conftest import Gateway, unique_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "datasheet.schema.json"


def sheet(title: str, *, rows: int = 120, tags: tuple[str, ...] = (), schema: Schema, **extra: Any) -> Datasheet:
    return Datasheet.from_json({
        "version": 1, "title": title, "description": f"{title}: rows a test listed", "tags": list(tags), "license": "CC-BY-4.0",
        "provider_name": "Test provider", "rows": rows, "label": {"name": "outcome", "description": "what happened"},
        "columns": [{"name": schema.feature_names[0], "description": "the first measurement", "unit": "mmol/L"}], **extra,
    })  # fmt: skip


def list_with_sheet(gateway: Gateway, seed: int, datasheet: Datasheet | None, schema: Schema) -> tuple[ListedDataset, LocalAccount]:
    net = gateway.net
    provider = net.chain.new_account()
    toy = toy_package(120, seed)
    package = DatasetPackage(features=toy.features, labels=toy.labels, schema=schema)
    listed = list_dataset(
        package, provider, terms=toy_terms(), market=net.market, registry=net.registry,  # type: ignore[arg-type]
        key_manager=net.key_manager, blobs=net.blobs, datasheet=datasheet,
    )  # fmt: skip
    return listed, provider


def test_the_published_json_schema_is_current_and_checks_datasheets() -> None:
    published = json.loads(SCHEMA_FILE.read_text())
    assert published == json_schema(), "docs/datasheet.schema.json is stale: write marketplace.datasheet.json_schema() to it"
    schema = unique_schema("js")
    jsonschema.validate(sheet("A table", schema=schema).to_json(), published)
    for bad in ({"version": 1}, {**sheet("A table", schema=schema).to_json(), "colour": "red"}, {**sheet("A", schema=schema).to_json(), "rows": 0}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, published)


def test_a_datasheet_is_published_listed_on_chain_and_shown_with_declared_bounds(gateway: Gateway) -> None:
    schema = Schema(
        task="classification", feature_names=("ds_age", "ds_income", "ds_debt", "ds_late"), feature_shape=(4,), class_names=("repaid", "default"),
        feature_bounds=((18, 100), (0, 500_000), (0, 2), None),
    )  # fmt: skip
    datasheet = sheet("Crédit applicants 2024 ☃", tags=("finance", "credit-scoring"), schema=schema,
                      provenance="exported from the loan system", collection_period={"start": "2024-01-01", "end": "2024-12-31"})  # fmt: skip
    published = gateway.client.post("/api/datasheets", content=datasheet.to_bytes(), headers={"content-type": "application/json"})
    assert published.status_code == 201, published.text
    assert published.json()["sha256"] == datasheet.hash().hex()
    listed, _ = list_with_sheet(gateway, 501, datasheet, schema)
    assert listed.datasheet_hash == datasheet.hash()
    assert gateway.net.market.datasheet_of(listed.dataset_id) == datasheet.hash()
    gateway.sync()

    detail = gateway.client.get(f"/api/datasets/{listed.dataset_id}").json()
    assert detail["datasheet_hash"] == "0x" + datasheet.hash().hex()
    assert detail["datasheet"] == datasheet.to_json()
    assert detail["columns"] == [
        {"name": "ds_age", "description": "the first measurement", "unit": "mmol/L", "bounds": [18, 100]},
        {"name": "ds_income", "description": "", "unit": "", "bounds": [0, 500000]},
        {"name": "ds_debt", "description": "", "unit": "", "bounds": [0, 2]},
        {"name": "ds_late", "description": "", "unit": "", "bounds": None},
    ]
    card = gateway.client.get("/api/datasets", params={"schema_hash": "0x" + schema.hash().hex()}).json()["items"][0]
    assert card["datasheet"] == {
        "title": "Crédit applicants 2024 ☃", "description": datasheet.description, "tags": ["finance", "credit-scoring"],
        "license": "CC-BY-4.0", "provider_name": "Test provider", "rows": 120, "label_name": "outcome",
    }  # fmt: skip


def test_datasets_are_searched_by_text_and_tags_sorted_by_title_and_rows_and_paged(gateway: Gateway) -> None:
    schema = unique_schema("searchable")
    specs = [
        ("Zebra hospital readmissions qv7", 120, ("health", "qv7")),
        ("alpha credit applicants qv7", 120, ("finance", "qv7")),
        ("Mango retail churn qv7 100%", 120, ("retail", "finance", "qv7")),
    ]
    listed = {}
    for i, (title, rows, tags) in enumerate(specs):
        listed[title.split()[0].lower()] = list_with_sheet(gateway, 510 + i, sheet(title, rows=rows, tags=tags, schema=schema), schema)[0].dataset_id
    no_sheet, _ = list_with_sheet(gateway, 514, None, schema)
    gateway.sync()
    base = {"schema_hash": "0x" + schema.hash().hex()}

    def ids(**params: Any) -> list[int]:
        response = gateway.client.get("/api/datasets", params={**base, **params})
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()["items"]]

    zebra, alpha, mango = listed["zebra"], listed["alpha"], listed["mango"]
    assert set(ids(q="qv7")) == {zebra, alpha, mango}
    assert ids(q="CREDIT") == [alpha]  # case-insensitive
    assert ids(q="credit hospital") == []  # every word must match
    assert ids(q="readmissions zebra") == [zebra]
    assert ids(q="mmol/l qv7", sort="title") == [alpha, mango, zebra]  # column units are searched too
    assert ids(q="100%") == [mango] and ids(q="qv7%") == [] and ids(q="q_7") == []  # LIKE wildcards are literal
    assert set(ids(tag="finance")) == {alpha, mango}
    assert ids(tag=["finance", "retail"]) == [mango]
    assert ids(q="qv7", tag="health") == [zebra]
    assert ids(sort="title") == [alpha, mango, zebra, no_sheet.dataset_id]  # no datasheet: last
    assert ids(sort="-title") == [zebra, mango, alpha, no_sheet.dataset_id]
    assert ids(sort="title", limit=2, offset=1) == [mango, zebra]
    assert gateway.client.get("/api/datasets", params={**base, "q": "qv7", "limit": 1}).json()["total"] == 3

    tags = {t["tag"]: t["count"] for t in gateway.client.get("/api/datasets/tags").json()["tags"]}
    assert tags["qv7"] == 3 and tags["finance"] >= 2 and tags["health"] >= 1

    for params in ({"tag": "Not A Tag"}, {"q": "x" * 201}, {"q": " ".join(f"w{i}" for i in range(9))}, {"sort": "colour"}):
        response = gateway.client.get("/api/datasets", params=params)
        assert response.status_code in (400, 422) and response.json()["detail"], params


def test_a_bad_datasheet_is_refused_with_each_problem_and_nothing_stored(gateway: Gateway) -> None:
    bad = {"version": 1, "title": " ", "description": "d", "tags": ["Finance"], "license": "x", "provider_name": "p", "rows": 0,
           "label": {"name": "y"}, "colour": "red", "collection_period": {"start": "2024-12-31", "end": "2024-01-01"}}  # fmt: skip
    response = gateway.client.post("/api/datasheets", json=bad)
    assert response.status_code == 422
    paths = {p["path"] for p in response.json()["problems"]}
    assert paths == {"title", "tags.0", "rows", "colour", "collection_period"}, response.json()
    assert "lower-case" in response.text and "after it ends" in response.text
    assert gateway.client.post("/api/datasheets", content=b"[1, 2]", headers={"content-type": "application/json"}).status_code == 400
    assert gateway.client.post("/api/datasheets", content=b'{"version": NaN}', headers={"content-type": "application/json"}).status_code == 422
    too_big = {**bad, "description": "x" * 300_000}
    assert gateway.client.post("/api/datasheets", json=too_big).status_code == 413


def test_the_sdk_refuses_a_datasheet_that_does_not_fit_before_sending_anything(gateway: Gateway) -> None:
    schema = unique_schema("misfit")
    before = gateway.net.market.dataset_count()
    for wrong, path in ((sheet("Wrong rows", rows=99, schema=schema), "rows"),
                        (Datasheet.from_json({**sheet("Bad column", schema=schema).to_json(), "columns": [{"name": "nope"}]}), "columns.0.name"),
                        (Datasheet.from_json({**sheet("Label", schema=schema).to_json(), "label": {"name": schema.feature_names[1]}}), "label.name")):  # fmt: skip
        with pytest.raises(InvalidDatasheet) as refused:
            list_with_sheet(gateway, 520, wrong, schema)
        assert [p for p, _ in refused.value.problems] == [path]
    assert gateway.net.market.dataset_count() == before


def test_only_the_provider_sets_a_datasheet_zero_withdraws_it_and_lost_documents_are_found_again(gateway: Gateway) -> None:
    schema = unique_schema("withdrawn")
    datasheet = sheet("Withdrawn later", schema=schema)
    listed, provider = list_with_sheet(gateway, 530, datasheet, schema)
    market = gateway.net.market
    with pytest.raises(ContractReverted, match="DatasetRegistryNotProvider"):
        market.set_datasheet(gateway.net.chain.new_account(), listed.dataset_id, b"\x01" * 32)
    gateway.sync()
    url = f"/api/datasets/{listed.dataset_id}"
    assert gateway.client.get(url).json()["datasheet"]["title"] == "Withdrawn later"

    # A rebuilt index (schema change, new database) has lost the documents: they come back from the blob store.
    with gateway.index.transaction() as session:
        session.execute(delete(DatasheetTag))
        session.execute(delete(DatasheetDocument))
    assert gateway.client.get(url).json()["datasheet"]["title"] == "Withdrawn later"
    assert gateway.client.get("/api/datasets", params={"q": "later withdrawn"}).json()["items"][0]["id"] == listed.dataset_id

    market.set_datasheet(provider, listed.dataset_id, bytes(32))
    gateway.sync()
    assert market.datasheet_of(listed.dataset_id) == bytes(32)
    assert gateway.client.get(url).json()["datasheet"] is None
    assert gateway.client.get("/api/datasets", params={"q": "withdrawn later"}).json()["items"] == []
