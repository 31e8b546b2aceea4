"""Sterling's one configuration: :class:`SterlingSettings`, built by :func:`get_settings`.

Each setting is taken from the first of these that gives it:

1. **flags**: keyword arguments of :func:`get_settings` (the CLI passes its options; ``None``
   means "not given" and never overrides);
2. **environment**: ``STERLING_<FIELD>``, and ``STERLING_<SECTION>_<FIELD>`` for a field of a
   section (``STERLING_GATEWAY_MAX_BLOB_BYTES``, ``STERLING_UP_TRAINER_THREADS``);
3. **brownie-config.yaml**: its ``networks:`` section (the default network and the networks);
4. **defaults** written here.

The YAML file is :attr:`SterlingSettings.config_file` (``STERLING_CONFIG_FILE``) if set, else
``brownie-config.yaml`` in the current directory, else the source checkout's (when the SDK runs
from one), else none. Its ``compiler:`` section is read by :mod:`marketplace.compile` only.
``docs/configuration.md`` lists every setting.

Example:
    >>> settings = get_settings(network="embedded")  # doctest: +SKIP
    >>> settings.chain_network.kind  # doctest: +SKIP
    'embedded'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from .errors import ConfigError

__all__ = [
    "BUILTIN_NETWORKS",
    "CONFIG_FILE_NAME",
    "ChainKind",
    "DemoSettings",
    "GatewaySettings",
    "NetworkConfig",
    "SterlingSettings",
    "UpSettings",
    "checkout_root",
    "get_settings",
]

CONFIG_FILE_NAME = "brownie-config.yaml"
ENV_PREFIX = "STERLING_"

ChainKind = Literal["embedded", "anvil", "rpc"]
"""``embedded``: py-evm in process; ``anvil``: a local node Sterling starts; ``rpc``: any JSON-RPC node."""


def checkout_root() -> Path | None:
    """The source checkout the SDK runs from, or ``None`` when it is installed (e.g. from a wheel).

    A checkout holds ``brownie-config.yaml``, ``contracts/`` and, after ``make setup``,
    ``node_modules/`` (anvil, solc, the browser's vendor files) next to the packages.
    """
    root = Path(__file__).resolve().parent.parent
    return root if (root / CONFIG_FILE_NAME).is_file() and (root / "contracts").is_dir() else None


class NetworkConfig(BaseModel):
    """One network of the ``networks:`` section (its name is the key it is listed under)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="", description="the key under `networks:` (filled in)")
    kind: ChainKind
    host: str | None = Field(default=None, description="rpc: the node's URL (scheme and host, or a full URL)")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="rpc: appended to host; anvil: the port it listens on (a free one if unset)"
    )
    hardfork: str | None = Field(default=None, description="anvil: the EVM hardfork (anvil's own default if unset)")
    confirmations: int = Field(
        default=0, ge=0, le=10_000,
        description="blocks a decision that cannot be undone waits for (reorganisation safety): the indexer stays this far "
        "behind the head, a worker asks for data keys, and the key manager releases them, only once the job's claim is this "
        "deep, and a bought model's key only once the purchase is (0: local chains, which do not reorganise)",
    )  # fmt: skip

    @model_validator(mode="after")
    def _fits_its_kind(self) -> NetworkConfig:
        if self.kind == "rpc" and not self.host:
            raise ValueError("an rpc network needs a host (its URL)")
        if self.kind != "rpc" and self.host is not None:
            raise ValueError(f"host applies to rpc networks only; an {self.kind} network runs on this machine")
        if self.kind == "embedded" and (self.port is not None or self.hardfork is not None):
            raise ValueError("an embedded network takes no port or hardfork")
        return self

    @property
    def url(self) -> str | None:
        """The JSON-RPC URL of an rpc network (``host`` plus ``:port`` if given)."""
        if self.host is None:
            return None
        return f"{self.host.rstrip('/')}:{self.port}" if self.port is not None else self.host


BUILTIN_NETWORKS: dict[str, dict[str, Any]] = {
    "embedded": {"kind": "embedded"},
    "anvil": {"kind": "anvil", "hardfork": "prague"},
}
"""The networks that exist without any YAML file (the checkout's ``brownie-config.yaml`` lists the same)."""
DEFAULT_NETWORK = "anvil"


class GatewaySettings(BaseModel):
    """The gateway's section (``STERLING_GATEWAY_<FIELD>``): where it listens and what it accepts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="address the gateway listens on")
    port: int = Field(default=8000, ge=1, le=65535, description="port the gateway listens on")
    max_blob_bytes: int = Field(default=1 << 30, ge=1, description="largest ciphertext upload")
    max_json_bytes: int = Field(default=1 << 20, ge=1024, description="largest JSON request body")
    rpc_max_batch: int = Field(default=20, ge=1, le=1000, description="largest JSON-RPC batch forwarded")
    rpc_timeout_seconds: float = Field(default=30.0, gt=0, description="timeout of a relayed JSON-RPC call")
    rpc_gas_cap: int = Field(default=30_000_000, ge=21_000, description="most gas a relayed eth_call or eth_estimateGas may use")
    rpc_call_seconds: float = Field(default=5.0, gt=0, description="time limit of a relayed eth_call or eth_estimateGas")
    allowed_hosts: tuple[str, ...] | None = Field(
        default=None,
        description="Host headers the gateway answers, `name` or `name:port` (unset: localhost, 127.0.0.1 and [::1] "
        "with the served port, and the listen address if it is a specific one)",
    )
    events_poll_seconds: float = Field(default=0.5, gt=0, description="how often an event stream looks for news")
    health_max_age_seconds: float = Field(
        default=0.5, ge=0, le=60,
        description="how old /api/health's figures may be before a request waits for fresh ones (0: every request waits)",
    )  # fmt: skip
    response_cache_entries: int = Field(default=512, ge=1, le=100_000, description="rendered index queries kept until the index moves")
    web_dir: Path | None = Field(default=None, description="static UI served at / (unset: the UI shipped with the sterling package)")
    vendor_dir: Path | None = Field(default=None, description="npm packages served at /vendor (unset: the checkout's node_modules, if any)")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _default_trainer_threads() -> int:
    """Training leaves one core to the gateway, indexer and chain that share the machine."""
    return max(1, (os.cpu_count() or 2) - 1)


class UpSettings(BaseModel):
    """``sterling up``'s section (``STERLING_UP_<FIELD>``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dev_accounts: int = Field(default=3, ge=0, le=100, description="development accounts (with keys) offered to the UI on local chains")
    indexer_interval: float = Field(default=0.5, gt=0, description="seconds between chain index polls")
    dispatcher_interval: float = Field(default=1.0, gt=0, description="seconds between job dispatcher polls")
    trainer_threads: int = Field(
        default_factory=_default_trainer_threads, ge=1, description="torch threads of the trainer enclave (default: cores - 1)"
    )
    trainers: int = Field(
        default=1, ge=1, le=8, description="trainer workers, each with its own operator account, stake and enclave"
    )
    operator_stake: float | None = Field(
        default=None,
        ge=0,
        description="stake the operator keeps deposited so its trainer may claim jobs (a claim needs Σ prices), "
        "in whole units of the payment currency (unset: 10 ETH, or 10 000 tokens in a token market)",
    )
    serving: bool = Field(default=True, description="start an inference enclave serving the model market's models (docs/inference.md)")
    inference_threads: int = Field(
        default=1, ge=1, le=1024,
        description="torch threads of the inference enclave (1: its batches are small, and idle OpenMP threads spin on the cores the "
        "gateway needs; raise it for large models served in bulk)",
    )  # fmt: skip
    redeem_interval: float = Field(
        default=30.0, gt=0, description="seconds between the inference operator's redemptions of the latest vouchers it served"
    )
    competitions: bool = Field(
        default=True, description="start an evaluator enclave scoring the competition market's submissions (docs/competitions.md)"
    )
    evaluator_interval: float = Field(default=2.0, gt=0, description="seconds between the evaluator's looks for scorings due")
    payment_token: str | None = Field(
        default=None,
        pattern=r"^(test|0x[0-9a-fA-F]{40})$",
        description="the ERC-20 the market is paid in: an address, or `test` to deploy a test stablecoin (6 decimals; development "
        "accounts and operators get tokens minted); unset: the chain's native currency",
    )


class DemoSettings(BaseModel):
    """``sterling demo``'s section (``STERLING_DEMO_<FIELD>``): the scenario's knobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epsilon: float = Field(default=1.0, gt=0, description="ε of the demo's training job")
    delta: float = Field(default=1e-5, gt=0, lt=1, description="δ of the demo's training job")
    seed: int = Field(default=7, ge=0, description="seed of the data split and model initialisation")
    state_dir: Path | None = Field(default=None, description="keep the demo's files here (unset: a temporary folder)")


class SterlingSettings(BaseSettings):
    """Every setting of the SDK and the applications; build it with :func:`get_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,  # STERLING_GATEWAY_MAX_BLOB_BYTES -> gateway.max_blob_bytes
        extra="forbid",
        frozen=True,
    )

    config_file: Path | None = Field(default=None, description="the YAML file read (found as the module docstring says if unset)")
    networks: dict[str, NetworkConfig] = Field(
        default_factory=lambda: {k: NetworkConfig(name=k, **v) for k, v in BUILTIN_NETWORKS.items()},
        description="named networks; the built-in embedded and anvil always exist, a listed network replaces the built-in one of its name",
    )
    network: str = Field(default=DEFAULT_NETWORK, description="the network to run on (brownie-config.yaml: networks.default)")
    rpc_url: str | None = Field(default=None, description="use the JSON-RPC node at this URL instead of `network`")
    anvil_bin: Path | None = Field(
        default=None, description="the anvil executable (unset: `anvil` on PATH, else the checkout's node_modules)"
    )
    state_dir: Path = Field(default=Path(".sterling"), description="sterling up: chain state, keys, deployment, index, blobs")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the chain index (unset: SQLite in state_dir)")
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    up: UpSettings = Field(default_factory=UpSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)

    @field_validator("networks", mode="before")
    @classmethod
    def _with_builtin_networks(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {**BUILTIN_NETWORKS, **value}
        return {name: ({**entry, "name": name} if isinstance(entry, dict) else entry) for name, entry in merged.items()}

    @field_validator("networks", mode="after")
    @classmethod
    def _named(cls, value: dict[str, NetworkConfig]) -> dict[str, NetworkConfig]:
        return {name: entry if entry.name == name else entry.model_copy(update={"name": name}) for name, entry in value.items()}

    @field_validator("network")
    @classmethod
    def _known_network(cls, value: str, info: ValidationInfo) -> str:
        networks = info.data.get("networks")
        if networks is not None and value not in networks:
            raise ValueError(f"unknown network {value!r}; defined: {', '.join(sorted(networks))}")
        return value

    @property
    def chain_network(self) -> NetworkConfig:
        """The network to run on: ``rpc_url`` if set, else the one named by ``network``."""
        if self.rpc_url is not None:
            return NetworkConfig(name="rpc", kind="rpc", host=self.rpc_url)
        return self.networks[self.network]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags, then the environment, then ``brownie-config.yaml`` (no dotenv, no secrets folder)."""
        return init_settings, env_settings, BrownieConfigSource(settings_cls)


class _NetworksYamlSource(YamlConfigSettingsSource):
    """The ``networks:`` section of one YAML file, as the fields ``network`` and ``networks``."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            document = super()._read_file(file_path)
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read {file_path}: {e}") from e
        if not isinstance(document, dict):
            raise ConfigError(f"{file_path} is not a YAML mapping")
        section = document.get("networks")
        if section is None:
            return {}
        if not isinstance(section, dict):
            raise ConfigError(f"{file_path}: `networks:` is not a mapping")
        entries = {name: entry for name, entry in section.items() if name != "default"}
        fields: dict[str, Any] = {"networks": entries} if entries else {}
        if "default" in section:
            fields["network"] = section["default"]
        return fields


class BrownieConfigSource(PydanticBaseSettingsSource):
    """The ``networks:`` of the YAML file that flags, the environment or the lookup order name.

    The file is located when the settings are built (the flags and the environment are known
    then), never at import time.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything comes from __call__

    def locate(self) -> Path | None:
        """The YAML file to read: ``config_file`` if given (it must exist), else the lookup order."""
        named = self.current_state.get("config_file")
        if named not in (None, ""):
            path = Path(named).expanduser()
            if not path.is_file():
                raise ConfigError(f"config_file ({ENV_PREFIX}CONFIG_FILE): {path} does not exist")
            return path
        here = Path.cwd() / CONFIG_FILE_NAME
        if here.is_file():
            return here
        root = checkout_root()
        if root is not None and (root / CONFIG_FILE_NAME).is_file():
            return root / CONFIG_FILE_NAME
        return None

    def __call__(self) -> dict[str, Any]:
        path = self.locate()
        if path is None:
            return {}
        return {**_NetworksYamlSource(self.settings_cls, yaml_file=path)(), "config_file": path}


def _drop_unset(flags: dict[str, Any]) -> dict[str, Any]:
    """Flags without the ``None`` ones (not given), sections included; empty sections dropped."""
    kept: dict[str, Any] = {}
    for key, value in flags.items():
        if isinstance(value, dict):
            value = _drop_unset(value)
            if not value:
                continue
        if value is not None:
            kept[key] = value
    return kept


def _env_name(loc: tuple[int | str, ...]) -> str:
    """The environment variable that sets the setting at ``loc`` (a network entry: STERLING_NETWORKS)."""
    head = [str(part) for part in loc[:1 if loc and loc[0] == "networks" else 2]]
    return ENV_PREFIX + "_".join(head).upper()


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        setting = ".".join(str(part) for part in loc) or "settings"
        where = f" ({_env_name(loc)})" if loc else ""
        got = f"; got {item['input']!r}" if "input" in item and not isinstance(item["input"], dict) else ""
        problems.append(f"{setting}{where}: {item['msg'].removeprefix('Value error, ')}{got}")
    return "invalid configuration: " + "; ".join(problems)


def get_settings(**flags: Any) -> SterlingSettings:
    """Build the settings: ``flags`` > environment > ``brownie-config.yaml`` > defaults.

    Args:
        flags: setting values given explicitly (e.g. CLI options), by field name; a section's
            fields as a dict (``gateway={"port": 8080}``). ``None`` values are ignored.

    Raises:
        ConfigError: a value is invalid or unknown (the message names the setting and its
            environment variable), or the YAML file is missing or unreadable.

    Example:
        >>> get_settings(network="embedded", gateway={"port": 8080}).gateway.port  # doctest: +SKIP
        8080
    """
    try:
        return SterlingSettings(**_drop_unset(flags))
    except ValidationError as e:
        raise ConfigError(_describe(e)) from e
    except SettingsError as e:  # e.g. an environment variable holding malformed JSON
        raise ConfigError(f"invalid configuration: {e}") from e
