"""Chain connection: the embedded py-evm chain, a local anvil node, or any JSON-RPC URL.

:func:`open_chain` opens the one a :class:`~marketplace.config.SterlingSettings` selects.

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
from typing import TYPE_CHECKING, Any, NewType, cast

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector, to_checksum_address
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError
from web3.types import BlockIdentifier, RPCEndpoint, TxParams, TxReceipt
from web3.types import Wei as Web3Wei

from .config import ChainKind, checkout_root
from .errors import ChainUnavailable, ContractReverted

if TYPE_CHECKING:
    from .config import SterlingSettings

logger = logging.getLogger(__name__)

Wei = NewType("Wei", int)
NONCE_ATTEMPTS = 5
"""Sends of one transaction when another sender for the same account takes its nonce first."""
NONCE_TAKEN_MESSAGES = ("nonce too low", "replacement transaction underpriced")
"""How nodes (anvil, geth) refuse a transaction whose nonce another one took."""
ANVIL_CHAIN_ID = 31337


@dataclass(frozen=True)
class TxResult:
    """A mined, successful transaction."""

    name: str
    tx_hash: str
    gas_used: int
    receipt: TxReceipt


BUILTIN_ERRORS: list[dict[str, Any]] = [
    {"type": "error", "name": "Error", "inputs": [{"name": "message", "type": "string"}]},
    {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
]
"""Solidity's own revert payloads: ``require(…, "reason")`` / ``revert("reason")`` and panics."""


class ErrorDecoder:
    """Custom errors of some ABIs, plus Solidity's ``Error`` and ``Panic``, by 4-byte selector.

    The one revert decoder: :class:`Chain` holds one, and the contract tests build one over every
    artifact's ABI.
    """

    def __init__(self, abis: Iterable[Iterable[dict[str, Any]]] = ()) -> None:
        self._errors: dict[bytes, tuple[str, list[str]]] = {}
        self.register(BUILTIN_ERRORS)
        for abi in abis:
            self.register(abi)

    def register(self, abi: Iterable[dict[str, Any]]) -> None:
        """Learn the custom errors of a contract ABI."""
        for item in abi:
            if item.get("type") == "error":
                types = [_abi_type(i) for i in item.get("inputs", [])]
                signature = f"{item['name']}({','.join(types)})"
                self._errors[function_signature_to_4byte_selector(signature)] = (item["name"], types)

    def decode(self, data: Any, *, function: str = "") -> ContractReverted:
        """Turn revert data into a :class:`ContractReverted` with the error's name and values
        (``UnknownRevert`` carrying the raw data when the selector is not known)."""
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


@dataclass
class Chain:
    """A connected chain plus the bookkeeping Sterling needs (gas log, error decoding)."""

    w3: Web3
    kind: ChainKind
    gas_log: list[tuple[str, int]] = field(default_factory=list)
    errors: ErrorDecoder = field(default_factory=lambda: ErrorDecoder())

    @cached_property
    def chain_id(self) -> int:
        """The chain id (asked once: it never changes for a connection)."""
        return int(self.w3.eth.chain_id)

    def register_errors(self, abi: Iterable[dict[str, Any]]) -> None:
        """Learn the custom errors of a contract ABI so reverts can be decoded by name."""
        self.errors.register(abi)

    def decode_revert(self, data: Any, *, function: str = "") -> ContractReverted:
        """Turn revert data into a :class:`ContractReverted` with the error's name and values."""
        return self.errors.decode(data, function=function)

    def transact(self, account: LocalAccount, fn: ContractFunction, *, value: int = 0, name: str | None = None) -> TxResult:
        """Sign ``fn`` with ``account``, send it, wait for the receipt and record its gas.

        Raises:
            ContractReverted: the call reverts (in estimation or on-chain).
        """
        label = name or fn.fn_name
        for attempt in range(1, NONCE_ATTEMPTS + 1):
            try:
                params: TxParams = {
                    "from": account.address,
                    "value": Web3Wei(value),
                    "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
                    "chainId": self.chain_id,
                }
                tx = fn.build_transaction(params)
            except ContractLogicError as e:
                raise self.decode_revert(e.data, function=label) from e
            except Exception as e:
                if type(e).__name__ != "TransactionFailed" or self.kind != "embedded":
                    raise
                raise self.decode_revert(self._embedded_revert_data(account.address, fn, value), function=label) from e
            signed = account.sign_transaction(cast(dict[str, Any], tx))  # web3's TxParams is a TypedDict eth-account does not name
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
                break
            except Web3RPCError as e:
                # Another process sending for the same account took this nonce between our read and
                # our send (services of one operator on one node): read the nonce again and re-sign.
                if attempt == NONCE_ATTEMPTS or not any(m in str(e).lower() for m in NONCE_TAKEN_MESSAGES):
                    raise
                logger.info("%s: nonce %d was taken by another sender; retrying (%d)", label, params["nonce"], attempt)
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

    def _embedded_revert_data(self, sender: str, fn: ContractFunction, value: int, block: BlockIdentifier = "latest") -> bytes | None:
        """Raw revert bytes of a call on the embedded chain.

        web3's tester provider renders custom-error data into a message string; eth-tester
        itself raises with the raw bytes, so the call is repeated one level down.
        """
        from eth_tester.exceptions import TransactionFailed

        tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        call = {"from": sender, "to": fn.address, "data": fn._encode_transaction_data(), "value": value, "gas": 30_000_000}
        try:
            with embedded_lock(self) or contextlib.nullcontext():
                tester.call(call, block)
        except TransactionFailed as e:
            raw = e.args[0] if e.args else None
            if isinstance(raw, Exception) and raw.args:
                raw = raw.args[0]
            if isinstance(raw, str) and raw[:2] in ("b'", 'b"'):
                # py-evm reports the revert data as the repr of a bytes object.
                raw = ast.literal_eval(raw)
            return raw if isinstance(raw, bytes) else None
        return None

    def call(self, fn: ContractFunction, *, name: str | None = None, block: BlockIdentifier = "latest") -> Any:
        """Run a view function (on the state after ``block``), decoding reverts like :meth:`transact`
        (on the embedded chain too, whose tester provider raises ``TransactionFailed`` instead of
        web3's ``ContractLogicError``)."""
        try:
            return fn.call(block_identifier=block)
        except ContractLogicError as e:
            raise self.decode_revert(e.data, function=name or fn.fn_name) from e
        except Exception as e:
            if type(e).__name__ != "TransactionFailed" or self.kind != "embedded":
                raise
            caller = str(self.w3.eth.accounts[0])  # funded: the re-run carries a gas limit
            raise self.decode_revert(self._embedded_revert_data(caller, fn, 0, block), function=name or fn.fn_name) from e

    def new_account(self, *, fund: Wei = Wei(10**21)) -> LocalAccount:
        """A fresh key pair, funded from the node's first unlocked development account."""
        account: LocalAccount = Account.create()
        if fund:
            self.fund(account.address, fund)
        return account

    def fund(self, address: str, amount: Wei, *, minimum: Wei | None = None) -> bool:
        """Send ``amount`` to ``address`` from the node's first unlocked development account.

        The embedded chain and anvil always have one; an RPC node may (a development node) or
        may not (a public network).

        Args:
            minimum: top up only if the balance is below this; ``None`` sends unconditionally.

        Returns:
            Whether anything was sent.

        Raises:
            ChainUnavailable: the node has no unlocked account to send from (fund ``address`` yourself).
        """
        if minimum is not None and self.balance(address) >= minimum:
            return False
        source = self._development_account()
        if source is None:
            raise ChainUnavailable(f"cannot fund {address}: the node has no unlocked development account")
        tx_hash = self.w3.eth.send_transaction({"from": source, "to": address, "value": amount})  # type: ignore[typeddict-item]
        self.w3.eth.wait_for_transaction_receipt(tx_hash)
        return True

    def _development_account(self) -> str | None:
        """The node's first unlocked account, or ``None`` (a node that holds no keys, or hides them)."""
        try:
            accounts = self.w3.eth.accounts
        except Exception:  # eth_accounts unsupported: a public node
            return None
        return str(accounts[0]) if accounts else None

    def balance(self, address: str) -> Wei:
        return Wei(int(self.w3.eth.get_balance(to_checksum_address(address))))

    def now(self) -> int:
        """Timestamp of the latest block (the contracts' notion of now)."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def confirmed_block(self, confirmations: int) -> int:
        """The newest block with ``confirmations`` blocks on top of it (``latest`` itself for 0): what
        a decision that cannot be undone reads, so that a reorganisation no deeper than that cannot
        take back what it was based on.

        Raises:
            ValueError: ``confirmations`` is negative.
        """
        if confirmations < 0:
            raise ValueError(f"confirmations must be at least 0, got {confirmations}")
        return max(0, int(self.w3.eth.block_number) - confirmations)

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
        from eth_tester.exceptions import TransactionFailed

        with self.lock:
            try:
                return super().make_request(method, params)
            except TransactionFailed:
                raise
            except Exception as e:
                failed = e.__context__
                if not isinstance(failed, TransactionFailed):
                    raise
                # web3 tries to read revert data as Error(string); for custom-error data whose
                # first word is a small odd offset it fails with OverflowError instead of its
                # DecodingError fallback. Report the revert as that fallback does.
                raise TransactionFailed(f"execution reverted: {failed.args[0]}") from None


def embedded() -> Chain:
    """A fresh in-process py-evm chain (web3's ``EthereumTesterProvider``, requests serialized)."""
    return Chain(w3=Web3(SerializedTesterProvider()), kind="embedded")


def embedded_lock(chain: Chain) -> contextlib.AbstractContextManager[Any] | None:
    """The lock serializing access to an embedded chain's tester, if it has one."""
    provider = chain.w3.provider
    return provider.lock if isinstance(provider, SerializedTesterProvider) else None


def _http_provider(url: str) -> HTTPProvider:
    """An HTTP JSON-RPC provider that asks the node's chain id once: web3's request validation asks it
    before every call otherwise, doubling the round trips of every read and transaction."""
    return HTTPProvider(
        url, request_kwargs={"timeout": 60}, cache_allowed_requests=True, cacheable_requests={RPCEndpoint("eth_chainId")}
    )


def connect_rpc(url: str, *, kind: ChainKind = "rpc", timeout: float = 30.0) -> Chain:
    """Connect to a JSON-RPC node, waiting up to ``timeout`` seconds for it to answer."""
    w3 = Web3(_http_provider(url))
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


def connect_gateway(url: str, *, timeout: float = 30.0) -> Chain:
    """The chain behind a Sterling gateway, through its JSON-RPC relay (``<url>/api/rpc``).

    The relay answers reads and ``eth_sendRawTransaction`` only (transactions are signed locally, as
    :meth:`Chain.transact` does), so the connection is checked with ``eth_chainId`` rather than
    ``web3_clientVersion``.

    Raises:
        ChainUnavailable: the gateway does not answer within ``timeout`` seconds.
    """
    w3 = Web3(_http_provider(url.rstrip("/") + "/api/rpc"))
    deadline = time.monotonic() + timeout
    while True:
        try:
            w3.eth.chain_id  # noqa: B018 (the call is the check)
            return Chain(w3=w3, kind="rpc")
        except Exception:  # not up yet, or not a gateway
            if time.monotonic() > deadline:
                raise ChainUnavailable(f"no Sterling gateway relay answered at {url}/api/rpc within {timeout:.0f} s") from None
            time.sleep(0.1)


def anvil_binary(configured: Path | None = None) -> Path:
    """The anvil executable: ``configured`` (the ``anvil_bin`` setting), else ``anvil`` on PATH, else
    the source checkout's npm package ``@foundry-rs/anvil``.

    Raises:
        ChainUnavailable: ``configured`` is not a file, or anvil is not installed (run ``make setup``).
    """
    if configured is not None:
        if not configured.is_file():
            raise ChainUnavailable(f"anvil_bin (STERLING_ANVIL_BIN): {configured} is not a file")
        return configured
    found = shutil.which("anvil")
    if found:
        return Path(found)
    root = checkout_root()
    if root is not None:
        for candidate in sorted((root / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil")):
            if candidate.is_file():
                return candidate
    raise ChainUnavailable(
        "anvil is not installed: run `make setup` in the checkout (npm install @foundry-rs/anvil), "
        "put anvil on PATH, or set STERLING_ANVIL_BIN"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def open_chain(settings: SterlingSettings, *, state_path: Path | None = None, state_interval: int | None = None) -> Iterator[Chain]:
    """The chain ``settings`` select (:attr:`~marketplace.config.SterlingSettings.chain_network`), open for the block.

    An rpc network is connected to; an embedded one is created; an anvil one is started with the
    network's hardfork and port (a free port if it names none, so that it never collides with a
    node already running) and stopped when the block ends.

    Args:
        state_path: anvil only: the file it loads its state from and dumps it to.
        state_interval: anvil only: also dump the state every this many seconds.

    Raises:
        ChainUnavailable: the node does not answer, or anvil cannot be started.

    Example:
        >>> with open_chain(get_settings(network="embedded")) as chain:  # doctest: +SKIP
        ...     chain.kind
        'embedded'
    """
    network = settings.chain_network
    if network.kind == "rpc":
        assert network.url is not None  # NetworkConfig refuses an rpc network without a host
        yield connect_rpc(network.url, kind="rpc")
    elif network.kind == "embedded":
        yield embedded()
    else:
        with anvil(
            port=network.port, hardfork=network.hardfork, state_path=state_path, state_interval=state_interval,
            binary=anvil_binary(settings.anvil_bin),
        ) as chain:  # fmt: skip
            yield chain


@contextmanager
def anvil(
    *,
    port: int | None = None,
    state_path: Path | None = None,
    hardfork: str | None = None,
    state_interval: int | None = None,
    binary: Path | None = None,
    keep_states: int | None = None,
) -> Iterator[Chain]:
    """Start a local anvil node for the duration of the block, then stop it.

    The node runs in its own session, so a Ctrl-C in the terminal reaches only Sterling, which
    stops the node last (anvil dumps its state on SIGTERM).

    Args:
        port: TCP port on 127.0.0.1 (a free one if ``None``).
        state_path: file anvil loads its state from and dumps it to on exit, so a restart loses nothing.
        hardfork: EVM hardfork, matching the compiler's ``evmVersion`` (anvil's default if ``None``).
        state_interval: also dump the state every this many seconds (survives a hard kill).
        binary: the anvil executable (:func:`anvil_binary` if ``None``).
        keep_states: keep only this many recent states (``--prune-history``): reads at older blocks
            fail, and a long run of transactions no longer grows the node's memory by a state per
            block (``make bench-scale``'s 30,000 transactions: gigabytes otherwise).
    """
    port = port or free_port()
    args = [
        str(binary or anvil_binary()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chain-id", str(ANVIL_CHAIN_ID),
        "--accounts", "2",
        "--balance", "1000000",
        "--silent",
    ]  # fmt: skip
    if hardfork is not None:
        args += ["--hardfork", hardfork]
    if keep_states is not None:
        args += ["--prune-history", str(keep_states)]
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
