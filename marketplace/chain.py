"""Chain connection: the embedded py-evm chain, a local anvil node, or any JSON-RPC URL.

:class:`Chain` signs every transaction locally, waits for its receipt, records its gas under a
readable name, and turns reverts into :class:`~marketplace.errors.ContractReverted` carrying the
contract's custom error name and arguments.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NewType

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3 import EthereumTesterProvider, Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted
from web3.types import TxReceipt

from .config import REPO_ROOT
from .errors import ChainUnavailable, ContractReverted

logger = logging.getLogger(__name__)

Wei = NewType("Wei", int)
ChainKind = Literal["embedded", "anvil", "rpc"]
ANVIL_CHAIN_ID = 31337


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    name: str
    tx_hash: str
    gas_used: int
    receipt: TxReceipt


@dataclass
class Chain:
    """A connected chain plus the bookkeeping Sterling needs (gas log, error decoding)."""

    w3: Web3
    kind: ChainKind
    gas_log: list[tuple[str, int]] = field(default_factory=list)
    _errors: dict[bytes, tuple[str, list[str]]] = field(default_factory=dict)

    @cached_property
    def chain_id(self) -> int:
        """The chain id (asked once: it never changes for a connection)."""
        return int(self.w3.eth.chain_id)

    def register_errors(self, abi: Iterable[dict[str, Any]]) -> None:
        """Learn the custom errors of a contract ABI so reverts can be decoded by name."""
        for item in abi:
            if item.get("type") == "error":
                types = [_abi_type(i) for i in item.get("inputs", [])]
                signature = f"{item['name']}({','.join(types)})"
                self._errors[function_signature_to_4byte_selector(signature)] = (item["name"], types)

    def decode_revert(self, data: Any, *, function: str = "") -> ContractReverted:
        """Turn revert data into a :class:`ContractReverted` with the error's name and values."""
        raw = _revert_bytes(data)
        if raw is not None and len(raw) >= 4 and raw[:4] in self._errors:
            name, types = self._errors[raw[:4]]
            try:
                values = tuple(
                    to_checksum_address(v) if t == "address" else v for t, v in zip(types, abi_decode(types, raw[4:]), strict=True)
                )
            except Exception:  # undecodable arguments still have a known name
                values = ()
            return ContractReverted(name, values, function=function)
        return ContractReverted("UnknownRevert", (raw.hex() if raw else str(data),), function=function)

    def transact(self, account: LocalAccount, fn: ContractFunction, *, value: int = 0, name: str | None = None) -> TxResult:
        """Sign ``fn`` with ``account``, send it, wait for the receipt and record its gas.

        Raises:
            ContractReverted: the call reverts (in estimation or on-chain).
        """
        label = name or fn.fn_name
        try:
            tx = fn.build_transaction(
                {
                    "from": account.address,
                    "value": value,
                    "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
                    "chainId": self.chain_id,
                }
            )
        except ContractLogicError as e:
            raise self.decode_revert(e.data, function=label) from e
        except Exception as e:
            if type(e).__name__ != "TransactionFailed" or self.kind != "embedded":
                raise
            raise self.decode_revert(self._embedded_revert_data(account.address, fn, value), function=label) from e
        signed = account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120)
        except TimeExhausted as e:
            raise ChainUnavailable(f"{label}: transaction {tx_hash.hex()} not mined within 120 s") from e
        if receipt["status"] != 1:
            raise ContractReverted("TransactionFailed", (tx_hash.hex(),), function=label)
        gas = int(receipt["gasUsed"])
        self.gas_log.append((label, gas))
        logger.info("%s mined in tx %s, gas %d", label, tx_hash.hex(), gas)
        return TxResult(name=label, tx_hash="0x" + tx_hash.hex().removeprefix("0x"), gas_used=gas, receipt=receipt)

    def _embedded_revert_data(self, sender: str, fn: ContractFunction, value: int) -> bytes | None:
        """Raw revert bytes of a call on the embedded chain.

        web3's tester provider renders custom-error data into a message string; eth-tester
        itself raises with the raw bytes, so the call is repeated one level down.
        """
        from eth_tester.exceptions import TransactionFailed

        tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        call = {"from": sender, "to": fn.address, "data": fn._encode_transaction_data(), "value": value, "gas": 30_000_000}
        try:
            with embedded_lock(self) or contextlib.nullcontext():
                tester.call(call, "latest")
        except TransactionFailed as e:
            raw = e.args[0] if e.args else None
            if isinstance(raw, Exception) and raw.args:
                raw = raw.args[0]
            if isinstance(raw, str) and raw[:2] in ("b'", 'b"'):
                # py-evm reports the revert data as the repr of a bytes object.
                raw = ast.literal_eval(raw)
            return raw if isinstance(raw, bytes) else None
        return None

    def call(self, fn: ContractFunction, *, name: str | None = None) -> Any:
        """Run a view function, decoding reverts like :meth:`transact`."""
        try:
            return fn.call()
        except ContractLogicError as e:
            raise self.decode_revert(e.data, function=name or fn.fn_name) from e

    def new_account(self, *, fund: Wei = Wei(10**21)) -> LocalAccount:
        """A fresh key pair, funded from the node's first unlocked development account."""
        account: LocalAccount = Account.create()
        if fund:
            self.fund(account.address, fund)
        return account

    def fund(self, address: str, amount: Wei) -> None:
        """Send ``amount`` from the node's first development account (embedded and anvil only)."""
        if self.kind == "rpc":
            raise ChainUnavailable("cannot fund accounts on an external RPC network; fund them yourself")
        source = self.w3.eth.accounts[0]
        tx_hash = self.w3.eth.send_transaction({"from": source, "to": address, "value": amount})
        self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def balance(self, address: str) -> Wei:
        return Wei(int(self.w3.eth.get_balance(address)))

    def now(self) -> int:
        """Timestamp of the latest block (the contracts' notion of now)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance_time(self, seconds: int) -> None:
        """Move chain time forward and mine a block (embedded and anvil only)."""
        if self.kind == "embedded":
            tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
            with embedded_lock(self) or contextlib.nullcontext():
                tester.time_travel(self.now() + seconds)
                tester.mine_blocks(1)
        elif self.kind == "anvil":
            self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
            self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        else:
            raise ChainUnavailable("cannot move time on an external network")


def _abi_type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in item["components"])
        return f"({inner}){item['type'][len('tuple'):]}"
    return str(item["type"])


def _revert_bytes(data: Any) -> bytes | None:
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, bytes):
        return data
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    return None


class SerializedTesterProvider(EthereumTesterProvider):
    """web3's ``EthereumTesterProvider`` with one lock around every request.

    py-evm is not thread-safe; ``sterling up`` reads and writes the embedded chain from the
    gateway, the indexer and the dispatcher at once, so requests take turns. Code that reaches
    past the provider to ``ethereum_tester`` holds :attr:`lock` too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()

    def make_request(self, method: Any, params: Any) -> Any:
        with self.lock:
            return super().make_request(method, params)


def embedded() -> Chain:
    """A fresh in-process py-evm chain (web3's ``EthereumTesterProvider``, requests serialized)."""
    return Chain(w3=Web3(SerializedTesterProvider()), kind="embedded")


def embedded_lock(chain: Chain) -> contextlib.AbstractContextManager[Any] | None:
    """The lock serializing access to an embedded chain's tester, if it has one."""
    provider = chain.w3.provider
    return provider.lock if isinstance(provider, SerializedTesterProvider) else None


def connect_rpc(url: str, *, kind: ChainKind = "rpc", timeout: float = 30.0) -> Chain:
    """Connect to a JSON-RPC node, waiting up to ``timeout`` seconds for it to answer."""
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            if w3.is_connected():
                return Chain(w3=w3, kind=kind)
        except Exception:  # not up yet: connection refused and friends
            pass
        if time.monotonic() > deadline:
            raise ChainUnavailable(f"no JSON-RPC node answered at {url} within {timeout:.0f} s")
        time.sleep(0.1)


def anvil_binary() -> Path:
    """The anvil executable from the npm package ``@foundry-rs/anvil`` (or PATH).

    Raises:
        ChainUnavailable: not installed (run ``make setup``).
    """
    candidates = sorted((REPO_ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise ChainUnavailable("anvil is not installed: run `make setup` (npm install @foundry-rs/anvil)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def anvil(
    *, port: int | None = None, state_path: Path | None = None, hardfork: str = "prague", state_interval: int | None = None
) -> Iterator[Chain]:
    """Start a local anvil node for the duration of the block, then stop it.

    The node runs in its own session, so a Ctrl-C in the terminal reaches only Sterling, which
    stops the node last (anvil dumps its state on SIGTERM).

    Args:
        port: TCP port on 127.0.0.1 (a free one if ``None``).
        state_path: file anvil loads its state from and dumps it to on exit, so a restart loses nothing.
        hardfork: EVM hardfork, matching the compiler's ``evmVersion``.
        state_interval: also dump the state every this many seconds (survives a hard kill).
    """
    port = port or free_port()
    args = [
        str(anvil_binary()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--hardfork", hardfork,
        "--chain-id", str(ANVIL_CHAIN_ID),
        "--accounts", "2",
        "--balance", "1000000",
        "--silent",
    ]  # fmt: skip
    if state_path is not None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        args += ["--state", str(state_path)]
        if state_interval is not None:
            args += ["--state-interval", str(state_interval)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    logger.info("started anvil pid %d on port %d", process.pid, port)
    try:
        try:
            chain = connect_rpc(f"http://127.0.0.1:{port}", kind="anvil", timeout=30)
        except ChainUnavailable:
            if process.poll() is not None and process.stderr is not None:
                raise ChainUnavailable(f"anvil exited: {process.stderr.read().decode(errors='replace')[-500:]}") from None
            raise
        yield chain
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
