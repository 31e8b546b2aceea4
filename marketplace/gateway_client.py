"""A Python client of the gateway that does what the browser does, over its HTTP API only:
encrypt locally, upload, deposit the wrapped key, sign locally, relay with ``eth_sendRawTransaction``.

Works with any ``httpx.Client`` (the in-process ``TestClient`` or a client of ``sterling up``);
used by the gateway tests and ``make bench-api``.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, filter_abi_by_type
from web3 import Web3

from enclave_worker.trusted import dataformat, keywrap
from enclave_worker.trusted.dataset import DatasetPackage, Schema, canonical_json
from enclave_worker.trusted.models import ModelSpec

from .abi import load_artifact
from .competing import AdmittedSubmission, Rules, TestSetDeposit
from .contracts import Terms
from .datasheet import Datasheet
from .errors import SterlingError
from .provider import signed_deposit
from .serving import JobModel

_MARKET = Web3().eth.contract(abi=load_artifact("JobMarket")["abi"])
RECEIPT_TIMEOUT_SECONDS = 60


class GatewayRequestFailed(SterlingError):
    """The gateway answered an HTTP error, a JSON-RPC error, or a reverted transaction."""


def indexed_id(receipt: dict[str, Any], event: str) -> int:
    """The first indexed argument (an id) of ``event`` in a raw JSON-RPC receipt, e.g. ``DatasetListed``'s dataset id.

    Raises:
        GatewayRequestFailed: the receipt holds no such event.
    """
    abi = next(item for item in filter_abi_by_type("event", _MARKET.abi) if item.get("name") == event)
    topic = "0x" + event_abi_to_log_topic(abi).hex()
    for log in receipt.get("logs", []):
        topics = [t if isinstance(t, str) else "0x" + bytes(t).hex() for t in log["topics"]]
        if topics and topics[0].lower() == topic:
            return int(topics[1], 16)
    raise GatewayRequestFailed(f"transaction {receipt.get('transactionHash')} emitted no {event}")


def encode_market_call(function: str, args: list[Any]) -> str:
    """Calldata of a ``JobMarket`` function, e.g. ``encode_market_call("cancelJob", [job_id])``, to sign and relay."""
    return str(_MARKET.encode_abi(function, args=args))


def _expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        request = response.request
        raise GatewayRequestFailed(f"{request.method} {request.url.path}: HTTP {response.status_code}: {response.text[:300]}")
    return response


def rpc(client: httpx.Client, method: str, params: list[Any] | None = None) -> Any:
    """One JSON-RPC call through the gateway's relay; its ``result``.

    Raises:
        GatewayRequestFailed: an HTTP or JSON-RPC error.
    """
    response = _expect(client.post("/api/rpc", json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}), 200)
    body = response.json()
    if "error" in body:
        raise GatewayRequestFailed(f"{method}: {body['error']}")
    return body["result"]


def relay_signed(
    client: httpx.Client, account: LocalAccount, *, to: str, data: str, value: int = 0, nonce: int, gas: int, chain_id: int, base_fee: int
) -> str:
    """Sign one EIP-1559 transaction locally and relay it with ``eth_sendRawTransaction``; its hash (not waited for)."""
    tip = 10**9
    tx: dict[str, Any] = {
        "type": 2, "chainId": chain_id, "nonce": nonce, "to": Web3.to_checksum_address(to), "data": data, "value": value,
        "gas": gas, "maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base_fee + tip,
    }  # fmt: skip
    signed = account.sign_transaction(tx)
    return str(rpc(client, "eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()]))


def chain_fees(client: httpx.Client) -> tuple[int, int]:
    """(chain id, latest base fee) through the relay."""
    return int(rpc(client, "eth_chainId"), 16), int(rpc(client, "eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)


def send_transaction(client: httpx.Client, account: LocalAccount, *, to: str, data: str, value: int = 0) -> dict[str, Any]:
    """Sign a transaction locally and relay it with ``eth_sendRawTransaction``; returns the receipt."""
    chain_id, base_fee = chain_fees(client)
    nonce = int(rpc(client, "eth_getTransactionCount", [account.address, "pending"]), 16)
    call = {"from": account.address, "to": to, "data": data, "value": hex(value)}
    gas = int(rpc(client, "eth_estimateGas", [call]), 16)
    tx_hash = relay_signed(client, account, to=to, data=data, value=value, nonce=nonce, gas=gas * 2, chain_id=chain_id, base_fee=base_fee)
    return wait_for_receipt(client, tx_hash)


def wait_for_receipt(client: httpx.Client, tx_hash: str, *, timeout: float = RECEIPT_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Poll until ``tx_hash`` is mined; its receipt.

    Raises:
        GatewayRequestFailed: the transaction reverted or was not mined within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipt = rpc(client, "eth_getTransactionReceipt", [tx_hash])
        if receipt is not None:
            if int(receipt["status"], 16) != 1:
                raise GatewayRequestFailed(f"transaction {tx_hash} reverted")
            return dict(receipt)
        time.sleep(0.1)
    raise GatewayRequestFailed(f"transaction {tx_hash} was not mined within {timeout} s")


@dataclass(frozen=True)
class HttpListing:
    """What the provider keeps (the data key never leaves it, except HPKE-wrapped)."""

    content_hash: str
    schema_hash: str
    data_key: bytes
    ciphertext: bytes
    receipt: dict[str, Any]


def list_dataset_over_http(
    client: httpx.Client, provider: LocalAccount, package: DatasetPackage, terms: Terms, *, datasheet: Datasheet | None = None
) -> HttpListing:
    """The provider flow of the UI: schema and ciphertext to the gateway, wrapped key to the key manager, tx relayed;
    then the datasheet, if given, to ``POST /api/datasheets`` and its hash on-chain (``setDatasheet``)."""
    if datasheet is not None:
        datasheet.check_fits(package.schema, rows=package.rows)
    config = client.get("/api/config").json()
    schema = _expect(
        client.post("/api/schemas", content=canonical_json(package.schema.to_json()), headers={"content-type": "application/json"}), 201
    )
    key = dataformat.new_data_key()
    uid = hashlib.sha256(provider.address.encode() + os.urandom(32)).digest()
    ciphertext = dataformat.encrypt_bytes(package.to_bytes(), key, kind=dataformat.Kind.DATASET, context=uid)
    digest = hashlib.sha256(ciphertext).hexdigest()
    upload = _expect(
        client.post("/api/blobs", content=ciphertext, headers={"content-type": "application/octet-stream", "x-content-sha256": digest}), 201
    )
    content_hash = upload.json()["sha256"]
    km_key = bytes.fromhex(config["key_manager"]["encryption_key"][2:])
    wrapped = keywrap.wrap(key, km_key, info=keywrap.datakey_info(bytes.fromhex(content_hash)))
    signature = signed_deposit(
        provider, bytes.fromhex(content_hash), wrapped, key_manager=config["key_manager"]["signer"],
        chain_id=int(config["chain_id"]), market=config["contracts"]["job_market"],
    )  # fmt: skip
    deposit = {"content_hash": content_hash, "wrapped_key": wrapped.hex(), "provider": provider.address, "signature": signature.hex()}
    _expect(client.post("/api/key-manager/deposits", json=deposit), 201)
    schema_hash = bytes.fromhex(schema.json()["sha256"])
    data = _MARKET.encode_abi("listDataset", args=[bytes.fromhex(content_hash), schema_hash, "sterling-blob:", terms.as_tuple(), [], []])
    receipt = send_transaction(client, provider, to=config["contracts"]["job_market"], data=data)
    if datasheet is not None:
        publish_datasheet(client, datasheet)
        dataset_id = indexed_id(receipt, "DatasetListed")
        data = _MARKET.encode_abi("setDatasheet", args=[dataset_id, datasheet.hash()])
        send_transaction(client, provider, to=config["contracts"]["job_market"], data=data)
    return HttpListing(content_hash, schema.json()["sha256"], key, ciphertext, receipt)


def publish_datasheet(client: httpx.Client, datasheet: Datasheet) -> bytes:
    """``POST /api/datasheets``; the hash, checked against the gateway's answer (what ``setDatasheet`` takes).

    Raises:
        GatewayRequestFailed: the gateway refused it (its reason, with every problem), or answered another hash.
    """
    published = _expect(client.post("/api/datasheets", content=datasheet.to_bytes(), headers={"content-type": "application/json"}), 201)
    digest = datasheet.hash()
    if published.json().get("sha256") != digest.hex():
        raise GatewayRequestFailed(f"the gateway stored the datasheet under {published.json().get('sha256')}, not {digest.hex()}")
    return digest


def create_job_over_http(
    client: httpx.Client,
    consumer: LocalAccount,
    *,
    dataset_ids: list[int],
    spec: ModelSpec,
    consumer_key: bytes,
    max_total_price: int,
    epsilon_units: int,
    worker_fee: int = 0,
) -> dict[str, Any]:
    """The consumer flow of the UI (native-currency market): spec published, ``createJob`` signed locally and relayed.

    ``max_total_price`` (the prices plus ``worker_fee`` the consumer agreed to) is sent as the
    value; the market credits back whatever the job costs less.
    """
    config = client.get("/api/config").json()
    published = _expect(client.post("/api/specs", content=spec.to_bytes(), headers={"content-type": "application/json"}), 201)
    now = int(rpc(client, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    request = (
        dataset_ids, bytes.fromhex(published.json()["sha256"]), epsilon_units, 10**13, consumer_key, worker_fee, max_total_price,
        now + 3600, now + 7200,
    )  # fmt: skip
    data = _MARKET.encode_abi("createJob", args=[request])
    return send_transaction(client, consumer, to=config["contracts"]["job_market"], data=data, value=max_total_price)


class GatewayModelStore:
    """A model owner's :class:`~marketplace.serving.ModelStore` over a gateway: the ciphertext to
    ``POST /api/blobs``, the spec to ``POST /api/specs`` (what inference hosts behind it read)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def put_ciphertext(self, ciphertext: bytes) -> bytes:
        digest = hashlib.sha256(ciphertext).hexdigest()
        headers = {"content-type": "application/octet-stream", "x-content-sha256": digest}
        return bytes.fromhex(_expect(self.client.post("/api/blobs", content=ciphertext, headers=headers), 201).json()["sha256"])

    def put_spec(self, spec: ModelSpec) -> bytes:
        reply = _expect(self.client.post("/api/specs", content=spec.to_bytes(), headers={"content-type": "application/json"}), 201)
        return bytes.fromhex(reply.json()["sha256"])


class _GatewayKeyManager:
    """The key manager behind a gateway: its signer from ``GET /api/config`` (read once)."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self._signer: str | None = None

    @property
    def signer(self) -> str:
        if self._signer is None:
            self._signer = str(_expect(self.client.get("/api/config"), 200).json()["key_manager"]["signer"])
        return self._signer


class GatewayModelKeys(_GatewayKeyManager):
    """A model owner's :class:`~marketplace.serving.ModelKeyDepository` over a gateway's
    ``POST /api/key-manager/model-deposits``."""

    def deposit(self, content_hash: bytes, wrapped_key: bytes, *, owner: str, signature: bytes) -> None:
        body = {"content_hash": content_hash.hex(), "wrapped_key": wrapped_key.hex(), "owner": owner, "signature": signature.hex()}
        _expect(self.client.post("/api/key-manager/model-deposits", json=body), 201)

    def deposit_from_job(self, job_id: int) -> JobModel:
        """``POST /api/key-manager/job-models``: the key manager takes a job's model sealed to it."""
        return self._job_model({"job_id": job_id})

    def deposit_job_model_copy(self, job_id: int, content_hash: bytes, wrapped_key: bytes, *, signature: bytes) -> JobModel:
        """``POST /api/key-manager/job-models`` with the consumer's copy (uploaded to the blob store first)."""
        copy = {"content_hash": content_hash.hex(), "wrapped_key": wrapped_key.hex(), "signature": signature.hex()}
        return self._job_model({"job_id": job_id, "copy": copy})

    def _job_model(self, body: dict[str, Any]) -> JobModel:
        taken = _expect(self.client.post("/api/key-manager/job-models", json=body), 201).json()
        return JobModel(
            job_id=int(taken["job_id"]), content_hash=bytes.fromhex(taken["content_hash"].removeprefix("0x")),
            weights_hash=bytes.fromhex(taken["weights_hash"].removeprefix("0x")), owner=str(taken["owner"]),
        )  # fmt: skip


class GatewayCompetitionStore:
    """A :class:`~marketplace.competing.CompetitionStore` over a gateway: ciphertexts to ``POST /api/blobs``,
    the schema to ``POST /api/schemas``, the rules to ``POST /api/competition-rules``, reads from ``GET /api/blobs``."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def put_ciphertext(self, ciphertext: bytes) -> bytes:
        digest = hashlib.sha256(ciphertext).hexdigest()
        headers = {"content-type": "application/octet-stream", "x-content-sha256": digest}
        return bytes.fromhex(_expect(self.client.post("/api/blobs", content=ciphertext, headers=headers), 201).json()["sha256"])

    def put_schema(self, schema: Schema) -> bytes:
        body = canonical_json(schema.to_json())
        return bytes.fromhex(_expect(self.client.post("/api/schemas", content=body, headers=_JSON), 201).json()["sha256"])

    def put_rules(self, rules: Rules) -> bytes:
        reply = _expect(self.client.post("/api/competition-rules", content=rules.to_bytes(), headers=_JSON), 201)
        return bytes.fromhex(reply.json()["sha256"])

    def get(self, digest: bytes) -> bytes:
        data = _expect(self.client.get(f"/api/blobs/{digest.hex()}"), 200).content
        if hashlib.sha256(data).digest() != digest:
            raise GatewayRequestFailed(f"the gateway answered other bytes than blob {digest.hex()}")
        return data


class GatewayCompetitionKeys(_GatewayKeyManager):
    """The key manager's competition side (:class:`~marketplace.competing.CompetitionKeyDepository`)
    over a gateway's ``/api/key-manager/*`` routes."""

    def deposit_test_set(self, content_hash: bytes, wrapped_key: bytes, *, organizer: str, signature: bytes) -> TestSetDeposit:
        body = {"content_hash": content_hash.hex(), "wrapped_key": wrapped_key.hex(), "organizer": organizer, "signature": signature.hex()}
        reply = _expect(self.client.post("/api/key-manager/test-sets", json=body), 201).json()
        return TestSetDeposit(content_hash=content_hash, schema_hash=bytes.fromhex(reply["schema_hash"][2:]), rows=int(reply["rows"]))

    def admit(
        self, competition_id: int, content_hash: bytes, wrapped_key: bytes, *, participant: str, signature: bytes
    ) -> AdmittedSubmission:
        body = {
            "competition_id": competition_id, "content_hash": content_hash.hex(), "wrapped_key": wrapped_key.hex(),
            "participant": participant, "signature": signature.hex(),
        }  # fmt: skip
        return _admitted(_expect(self.client.post("/api/key-manager/admissions", json=body), 201).json())

    def admit_job_model(self, competition_id: int, job_id: int) -> AdmittedSubmission:
        body = {"competition_id": competition_id, "job_id": job_id}
        return _admitted(_expect(self.client.post("/api/key-manager/job-admissions", json=body), 201).json())

    def release_purchase(self, competition_id: int, index: int, *, buyer: str) -> bytes:
        body = {"competition_id": competition_id, "index": index, "buyer": buyer}
        return bytes.fromhex(_expect(self.client.post("/api/key-manager/purchases", json=body), 200).json()["released_key"][2:])


_JSON = {"content-type": "application/json"}


def _admitted(reply: dict[str, Any]) -> AdmittedSubmission:
    return AdmittedSubmission(
        competition_id=int(reply["competition_id"]), participant=str(reply["participant"]),
        content_hash=bytes.fromhex(reply["content_hash"][2:]), weights_hash=bytes.fromhex(reply["weights_hash"][2:]),
        admission=bytes.fromhex(reply["admission"][2:]),
    )  # fmt: skip


class GatewayDatasetKeys(_GatewayKeyManager):
    """The key manager's dataset-key side through a gateway (``POST /api/key-manager/deposits``): a
    :class:`~marketplace.provider.KeyDepository` for :func:`~marketplace.provider.list_dataset`."""

    def deposit(self, content_hash: bytes, wrapped_key: bytes, *, provider: str, signature: bytes) -> None:
        body = {"content_hash": content_hash.hex(), "wrapped_key": wrapped_key.hex(), "provider": provider, "signature": signature.hex()}
        _expect(self.client.post("/api/key-manager/deposits", json=body), 201)
