"""What the gateway is wired to: the chain, the contracts, the blob store, the index, the key manager."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount

from enclave_worker.status import JobStatusBoard
from marketplace.abi import ERC20_ABI
from marketplace.blobstore import BlobStore
from marketplace.chain import Chain
from marketplace.competitions import CompetitionMarketClient
from marketplace.contracts import MarketClient, RegistryClient
from marketplace.model_market import ModelMarketClient
from marketplace.provider import KeyDepository
from oracle.index_db import IndexDatabase, cursor_key

if TYPE_CHECKING:
    from enclave_worker.remote_inference import InferenceHost
    from enclave_worker.remote_keys import CompetitionKeyHost, ModelKeyHost
    from sterling.localnet import LocalNet


@dataclass(frozen=True)
class PaymentToken:
    """The ERC-20 a token-mode market is paid in."""

    address: str
    symbol: str
    decimals: int


@dataclass(frozen=True)
class GatewayServices:
    """The gateway's collaborators, built by ``sterling up`` (or a test) and handed to ``create_app``.

    Attributes:
        deployment_block: the block the index starts from.
        key_manager: the key-manager host deposits are forwarded to (``None``: deposits refused).
        status: the worker status board (``None``: no progress events).
        dev_accounts: funded development accounts shown to the UI (local chains only).
        attestation_formats: verifier address → evidence format it checks (``sim``, ``aws-nitro``).
        model_market, model_keys, inference: the model market, the key manager's model-key side (in
            process, or a ``sterling keymanager``'s through :class:`~enclave_worker.remote_keys.RemoteModelKeys`)
            and the inference host requests are relayed to (in process, or a ``sterling inference``'s
            through :class:`~enclave_worker.remote_inference.RemoteInference`; ``None``: no serving).
        competitions, competition_keys: the competition market and the key manager's competition side
            (in process or :class:`~enclave_worker.remote_keys.RemoteCompetitionKeys`; ``None``: no competitions).
        index_version: the index's ``(rollbacks, last block)`` (:attr:`oracle.indexer.Indexer.version`),
            known in memory because the only indexer writing it runs in this process (``sterling up``);
            ``None``: read it from the database.
    """

    chain: Chain
    market: MarketClient
    registry: RegistryClient
    blobs: BlobStore
    index: IndexDatabase
    deployment_block: int
    key_manager: KeyDepository | None = None
    status: JobStatusBoard | None = None
    dev_accounts: tuple[LocalAccount, ...] = ()
    attestation_formats: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    index_version: Callable[[], tuple[int, int] | None] | None = None
    model_market: ModelMarketClient | None = None
    model_keys: ModelKeyHost | None = None
    inference: InferenceHost | None = None
    competitions: CompetitionMarketClient | None = None
    competition_keys: CompetitionKeyHost | None = None

    @property
    def cursor_key(self) -> str:
        return cursor_key(self.chain.chain_id, self.market.address, self.registry.address)

    @cached_property
    def payment_token(self) -> PaymentToken | None:
        """The market's ERC-20 and its metadata, or ``None`` in native mode (read once: it never changes)."""
        address = self.market.payment_token()
        if address is None:
            return None
        token = self.chain.w3.eth.contract(address=self.chain.w3.to_checksum_address(address), abi=ERC20_ABI)
        symbol, decimals = self.chain.call(token.functions.symbol()), self.chain.call(token.functions.decimals())
        return PaymentToken(address=str(token.address), symbol=str(symbol), decimals=int(decimals))

    @classmethod
    def from_localnet(
        cls,
        net: LocalNet,
        index: IndexDatabase,
        *,
        dev_accounts: tuple[LocalAccount, ...] = (),
        index_version: Callable[[], tuple[int, int] | None] | None = None,
    ) -> GatewayServices:
        """Services for a :class:`~sterling.localnet.LocalNet` (its verifier checks ``sim`` evidence)."""
        return cls(
            chain=net.chain,
            market=net.market,
            registry=net.registry,
            blobs=net.blobs,
            index=index,
            deployment_block=net.deployment.block,
            key_manager=net.key_manager,
            status=net.worker.status,
            dev_accounts=dev_accounts,
            attestation_formats=MappingProxyType({net.verifier.signer.address: "sim"}),
            index_version=index_version,
            model_market=ModelMarketClient(net.chain, net.deployment.model_market) if net.deployment.model_market else None,
            competitions=CompetitionMarketClient(net.chain, net.deployment.competitions) if net.deployment.competitions else None,
        )
