"""The one configuration: flags > environment > brownie-config.yaml > defaults, and where the YAML is found."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from marketplace import config as config_mod
from marketplace.chain import anvil_binary, open_chain
from marketplace.compile import CompilationError, compile_contracts
from marketplace.config import BUILTIN_NETWORKS, CONFIG_FILE_NAME, checkout_root, get_settings
from marketplace.errors import ChainUnavailable, ConfigError

YAML = """\
compiler:
  evm_version: prague
networks:
  default: embedded
  local2:
    kind: anvil
    hardfork: cancun
  local3:
    kind: anvil
  sepolia:
    kind: rpc
    host: https://rpc.example.org
"""


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No STERLING_* variables, an empty working directory, and no source checkout to fall back on."""
    for name in list(os.environ):
        if name.upper().startswith("STERLING_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(config_mod, "checkout_root", lambda: None)
    yield work


def write_yaml(folder: Path, text: str = YAML) -> Path:
    path = folder / CONFIG_FILE_NAME
    path.write_text(text)
    return path


def test_each_level_overrides_the_next(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # defaults
    assert get_settings().network == "anvil"
    # brownie-config.yaml > defaults
    write_yaml(clean)
    assert get_settings().network == "embedded"
    # environment > brownie-config.yaml
    monkeypatch.setenv("STERLING_NETWORK", "local2")
    assert get_settings().network == "local2"
    # flags > environment; a flag given as None is "not given"
    assert get_settings(network="local3").network == "local3"
    assert get_settings(network=None).network == "local2"


def test_section_fields_layer_too_and_keep_their_environment_names(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_settings().gateway.max_blob_bytes == 1 << 30
    monkeypatch.setenv("STERLING_GATEWAY_MAX_BLOB_BYTES", "4096")
    monkeypatch.setenv("STERLING_GATEWAY_PORT", "8123")
    monkeypatch.setenv("STERLING_UP_TRAINER_THREADS", "3")
    monkeypatch.setenv("STERLING_DEMO_SEED", "11")
    settings = get_settings(gateway={"port": 9000, "host": None})
    assert settings.gateway.max_blob_bytes == 4096  # environment
    assert settings.gateway.port == 9000  # the flag beats STERLING_GATEWAY_PORT
    assert settings.gateway.host == "127.0.0.1"  # a None flag leaves the default
    assert settings.up.trainer_threads == 3 and settings.demo.seed == 11


def test_network_entries_merge_over_the_yaml_and_the_builtins(clean: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_yaml(clean)
    networks = get_settings().networks
    assert set(networks) == {"embedded", "anvil", "local2", "local3", "sepolia"}  # built-ins stay
    assert networks["local2"].hardfork == "cancun" and networks["sepolia"].url == "https://rpc.example.org"
    monkeypatch.setenv("STERLING_NETWORKS", '{"sepolia": {"port": 8546}}')
    assert get_settings().networks["sepolia"].url == "https://rpc.example.org:8546"
    assert get_settings(network="sepolia").chain_network.kind == "rpc"
    rpc = get_settings(rpc_url="http://node:8545").chain_network  # rpc_url beats the named network
    assert rpc.kind == "rpc" and rpc.url == "http://node:8545"


def test_without_any_yaml_file_the_builtin_networks_apply(clean: Path) -> None:
    settings = get_settings()
    assert settings.config_file is None
    assert {name: n.model_dump(exclude={"name"}, exclude_defaults=True) for name, n in settings.networks.items()} == BUILTIN_NETWORKS
    assert settings.chain_network.kind == "anvil" and settings.chain_network.hardfork == "prague"


def test_the_checkouts_yaml_lists_the_builtin_networks() -> None:
    root = checkout_root()
    assert root is not None, "the tests run from a source checkout"
    from_file = get_settings(config_file=root / CONFIG_FILE_NAME)
    assert {name: n.model_dump(exclude={"name"}, exclude_defaults=True) for name, n in from_file.networks.items()} == BUILTIN_NETWORKS
    assert from_file.network == config_mod.DEFAULT_NETWORK


def test_the_yaml_is_found_in_the_working_directory_before_the_checkout(
    clean: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    write_yaml(checkout, YAML.replace("default: embedded", "default: local3"))
    monkeypatch.setattr(config_mod, "checkout_root", lambda: checkout)
    assert get_settings().network == "local3" and get_settings().config_file == checkout / CONFIG_FILE_NAME
    here = write_yaml(clean)
    assert get_settings().network == "embedded" and get_settings().config_file == here


def test_sterling_config_file_points_elsewhere(clean: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_yaml(clean)  # ./brownie-config.yaml says embedded
    other = tmp_path / "other.yaml"
    other.write_text("networks:\n  default: mine\n  mine:\n    kind: anvil\n    port: 9545\n")
    monkeypatch.setenv("STERLING_CONFIG_FILE", str(other))
    settings = get_settings()
    assert settings.config_file == other and settings.network == "mine" and settings.chain_network.port == 9545
    assert "local2" not in settings.networks  # the working directory's file is not read
    monkeypatch.setenv("STERLING_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="STERLING_CONFIG_FILE.*missing.yaml"):
        get_settings()
    assert get_settings(config_file=other).network == "mine"  # the flag beats the environment


@pytest.mark.parametrize(
    ("env", "flags", "named"),
    [
        ({"STERLING_GATEWAY_PORT": "70000"}, {}, r"gateway\.port \(STERLING_GATEWAY_PORT\).*65535"),
        ({"STERLING_UP_TRAINER_THREADS": "many"}, {}, r"up\.trainer_threads \(STERLING_UP_TRAINER_THREADS\)"),
        ({"STERLING_NETWORK": "mainnet-typo"}, {}, r"network \(STERLING_NETWORK\): unknown network 'mainnet-typo'"),
        ({}, {"demo": {"delta": 2.0}}, r"demo\.delta \(STERLING_DEMO_DELTA\)"),
        ({}, {"networks": {"x": {"kind": "rpc"}}}, r"networks\.x \(STERLING_NETWORKS\): an rpc network needs a host"),
        ({"STERLING_NETWORKS": "{not json"}, {}, r"networks"),
        ({}, {"no_such_setting": 1}, r"no_such_setting"),
    ],
)
def test_a_bad_value_names_the_setting(
    clean: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], flags: dict[str, object], named: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        get_settings(**flags)


def test_a_bad_yaml_file_names_the_file_or_the_setting(clean: Path) -> None:
    write_yaml(clean, "networks:\n  anvil:\n    kind: ganache\n")
    with pytest.raises(ConfigError, match=r"networks\.anvil\.kind"):
        get_settings()
    write_yaml(clean, "networks: [unclosed\n")
    with pytest.raises(ConfigError, match=CONFIG_FILE_NAME):
        get_settings()


def test_open_chain_opens_the_selected_network(clean: Path) -> None:
    with open_chain(get_settings(network="embedded")) as chain:
        assert chain.kind == "embedded" and chain.w3.eth.block_number == 0


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_anvil_binary_setting_then_path_then_checkout(clean: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    from_npm = checkout / "node_modules" / "@foundry-rs" / "anvil-test" / "bin"
    from_npm.mkdir(parents=True)
    npm_anvil = _executable(from_npm / "anvil")
    monkeypatch.setattr("marketplace.chain.checkout_root", lambda: checkout)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert anvil_binary() == npm_anvil
    on_path = tmp_path / "bin"
    on_path.mkdir()
    path_anvil = _executable(on_path / "anvil")
    monkeypatch.setenv("PATH", str(on_path))
    assert anvil_binary() == path_anvil
    configured = _executable(tmp_path / "my-anvil")
    monkeypatch.setenv("STERLING_ANVIL_BIN", str(configured))
    assert anvil_binary(get_settings().anvil_bin) == configured
    with pytest.raises(ChainUnavailable, match="STERLING_ANVIL_BIN"):
        anvil_binary(tmp_path / "missing")


def test_compiling_outside_a_checkout_asks_for_a_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("marketplace.compile.checkout_root", lambda: None)
    with pytest.raises(CompilationError, match="project_root"):
        compile_contracts()
