"""``GET /api/config``: what the browser needs to talk to this deployment."""

from __future__ import annotations

import enum
import ipaddress

from fastapi import APIRouter, Request

from enclave_worker.trusted.onchain import DELTA_SCALE, EPSILON_SCALE, SCORE_SCALE, DatasetStatus, JobStatus, Role
from marketplace.abi import ERC20_ABI
from sterling.gateway.api.deps import ServicesDep, SettingsDep
from sterling.gateway.headers import is_loopback_host
from sterling.gateway.schemas import (
    ConfigPublic,
    ContractsPublic,
    DevAccountPublic,
    KeyManagerPublic,
    PaymentTokenPublic,
)

router = APIRouter(tags=["config"])

RPC_PATH = "/api/rpc"


def api_names(members: type[enum.IntEnum]) -> dict[str, int]:
    """An on-chain enum as the API spells it: each member's lower-case name → its number on chain."""
    return {member.name.lower(): int(member) for member in members}


def _is_loopback_client(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def offers_dev_keys(request: Request, chain_kind: str) -> bool:
    """Dev accounts' keys go only to a browser on this machine, for a local development chain.

    Both the ``Host`` it asked for and the address it connects from must be loopback: a LAN
    client of a gateway listening on 0.0.0.0, or a page whose name rebinds to 127.0.0.1, gets none.
    """
    client = request.client.host if request.client is not None else None
    return chain_kind in ("embedded", "anvil") and is_loopback_host(request.headers.get("host")) and _is_loopback_client(client)


@router.get("/config", response_model=ConfigPublic)
def config(request: Request, services: ServicesDep, settings: SettingsDep) -> ConfigPublic:
    """Chain id, contract addresses, the key manager's attested key, the payment token, the chain's units,
    statuses and roles, the ERC-20 fragment, and dev accounts (local chains, asked from this machine only)."""
    key_manager = None
    if services.key_manager is not None:
        signer = services.key_manager.signer
        record = services.registry.enclave_of(signer)
        key_manager = KeyManagerPublic(
            signer=signer,
            encryption_key="0x" + record.encryption_key.hex(),
            measurement="0x" + record.measurement.hex(),
            valid_until=record.valid_until,
            active=services.registry.is_active(signer, Role.KEY_MANAGER),
        )
    token = services.payment_token
    local = offers_dev_keys(request, services.chain.kind)
    return ConfigPublic(
        chain_id=services.chain.chain_id,
        chain_kind=services.chain.kind,
        rpc_path=RPC_PATH,
        deployment_block=services.deployment_block,
        contracts=ContractsPublic(
            job_market=services.market.address, enclave_registry=services.registry.address,
            model_market=services.model_market.address if services.model_market is not None else None,
            competitions=services.competitions.address if services.competitions is not None else None,
        ),  # fmt: skip
        key_manager=key_manager,
        payment_token=(
            PaymentTokenPublic(address=token.address, symbol=token.symbol, decimals=token.decimals) if token is not None else None
        ),
        epsilon_scale=EPSILON_SCALE,
        score_scale=SCORE_SCALE,
        delta_scale=DELTA_SCALE,
        max_blob_bytes=settings.max_blob_bytes,
        job_statuses=api_names(JobStatus),
        dataset_statuses=api_names(DatasetStatus),
        roles=api_names(Role),
        erc20_abi=ERC20_ABI,
        dev_accounts=(
            [DevAccountPublic(address=a.address, private_key="0x" + bytes(a.key).hex()) for a in services.dev_accounts] if local else []
        ),
    )
