"""The browser's JSON-RPC endpoint: reads and signed transactions pass, everything else is refused."""

from __future__ import annotations

from typing import Any

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_utils import function_signature_to_4byte_selector

from tests.gateway.conftest import Gateway
from tests.gateway.http_flow import rpc, send_transaction


def call(gateway: Gateway, payload: Any) -> Any:
    response = gateway.client.post("/api/rpc", json=payload)
    assert response.status_code == 200, response.text
    return response.json()


def test_reads_are_forwarded(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    assert int(rpc(client, "eth_chainId"), 16) == net.chain.chain_id
    assert int(rpc(client, "eth_blockNumber"), 16) == net.chain.w3.eth.block_number
    assert int(rpc(client, "eth_getBalance", [net.operator.address, "latest"]), 16) == net.chain.balance(net.operator.address)
    assert rpc(client, "eth_getCode", [net.market.address, "latest"]) == "0x" + bytes(net.chain.w3.eth.get_code(net.market.contract.address)).hex()
    data = "0x" + function_signature_to_4byte_selector("jobCount()").hex()
    (count,) = abi_decode(["uint256"], bytes.fromhex(rpc(client, "eth_call", [{"to": net.market.address, "data": data}, "latest"])[2:]))
    assert count == net.market.job_count()
    block = rpc(client, "eth_getBlockByNumber", ["latest", False])
    assert int(block["number"], 16) == net.chain.w3.eth.block_number and block["hash"].startswith("0x")
    logs = rpc(client, "eth_getLogs", [{"fromBlock": hex(net.deployment.block), "toBlock": "latest", "address": net.registry.address}])
    assert logs and all(log["address"].lower() == net.registry.address.lower() for log in logs)


def test_a_locally_signed_transaction_is_relayed(gateway: Gateway) -> None:
    net, client = gateway.net, gateway.client
    sender, recipient = net.chain.new_account(), Account.create()
    receipt = send_transaction(client, sender, to=recipient.address, data="0x", value=12345)
    assert int(receipt["status"], 16) == 1
    assert net.chain.balance(recipient.address) == 12345
    tx = rpc(client, "eth_getTransactionByHash", [receipt["transactionHash"]])
    assert tx["from"].lower() == sender.address.lower()


def test_reverts_come_back_with_their_custom_error_data(gateway: Gateway) -> None:
    net = gateway.net
    selector = function_signature_to_4byte_selector("job(uint256)")
    data = "0x" + (selector + (10**9).to_bytes(32, "big")).hex()
    reply = call(gateway, {"jsonrpc": "2.0", "id": 7, "method": "eth_call", "params": [{"to": net.market.address, "data": data}, "latest"]})
    assert reply["id"] == 7 and reply["error"]["code"] == 3
    assert reply["error"]["data"].startswith("0x" + function_signature_to_4byte_selector("JobMarketUnknownJob(uint256)").hex())


def test_other_methods_and_malformed_requests_get_json_rpc_errors(gateway: Gateway) -> None:
    for method in ("eth_sendTransaction", "eth_accounts", "eth_sign", "personal_unlockAccount", "anvil_setBalance", "evm_mine", "evm_increaseTime", "debug_traceTransaction"):
        reply = call(gateway, {"jsonrpc": "2.0", "id": "x", "method": method, "params": []})
        assert reply["id"] == "x" and reply["error"]["code"] == -32601 and "eth_sendRawTransaction only" in reply["error"]["message"], method
    malformed = gateway.client.post("/api/rpc", content=b'{"jsonrpc": "2.0", "method": ', headers={"content-type": "application/json"})
    assert malformed.status_code == 200 and malformed.json()["error"]["code"] == -32700
    assert call(gateway, [])["error"]["code"] == -32600
    assert call(gateway, 42)["error"]["code"] == -32600
    assert call(gateway, {"jsonrpc": "1.0", "id": 1, "method": "eth_chainId"})["error"]["code"] == -32600
    assert call(gateway, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": "nope"})["error"]["code"] == -32602
    bad_tx = call(gateway, {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": ["0x1234"]})
    assert "error" in bad_tx and bad_tx["error"]["message"]
    oversized = call(gateway, [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(gateway.settings.rpc_max_batch + 1)])
    assert oversized["error"]["code"] == -32600


def test_batches_keep_order_and_ids(gateway: Gateway) -> None:
    replies = call(
        gateway,
        [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
            {"jsonrpc": "2.0", "id": "two", "method": "eth_accounts"},
            {"jsonrpc": "2.0", "id": 3, "method": "eth_blockNumber", "params": []},
            "not a request",
        ],
    )
    assert [r["id"] for r in replies] == [1, "two", 3, None]
    assert int(replies[0]["result"], 16) == gateway.net.chain.chain_id
    assert replies[1]["error"]["code"] == -32601 and "result" in replies[2] and replies[3]["error"]["code"] == -32600
