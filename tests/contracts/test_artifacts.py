"""The committed artifacts are exactly what the configured compiler produces from the sources."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from marketplace.abi import load_artifact
from marketplace.compile import (
    WEB_ABI_PATH,
    CompilationError,
    compile_contracts,
    compile_test_contracts,
    render_web_abi,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_committed_artifacts_match_fresh_compile() -> None:
    fresh = compile_contracts()
    assert sorted(fresh) == ["CompetitionMarket", "EnclaveRegistry", "JobMarket", "ModelMarket"]
    for name, artifact in fresh.items():
        committed = load_artifact(name)
        assert committed["abi"] == artifact["abi"], name
        assert committed["bytecode"] == artifact["bytecode"], name
        assert committed["deployedBytecode"] == artifact["deployedBytecode"], name


def test_the_browsers_abi_copy_matches_the_committed_artifacts() -> None:
    committed = {name: load_artifact(name) for name in ("EnclaveRegistry", "JobMarket", "ModelMarket", "CompetitionMarket")}
    assert (PROJECT_ROOT / WEB_ABI_PATH).read_text(encoding="utf-8") == render_web_abi(committed), (
        "web/js/abi.js is stale: run `python -m marketplace.compile`"
    )


def test_committed_test_artifacts_match_fresh_compile() -> None:
    fresh = compile_test_contracts()
    assert sorted(fresh) == ["FeeOnTransferToken", "HookToken", "PaymentReceiverMock", "TestStablecoin"]
    for name, artifact in fresh.items():
        assert load_artifact(name, test=True) == artifact


def test_artifact_shape() -> None:
    artifact = load_artifact("JobMarket")
    assert set(artifact) == {"abi", "bytecode", "deployedBytecode"}
    assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
    # EIP-170: deployed code must stay below 24 576 bytes.
    assert (len(artifact["deployedBytecode"]) - 2) // 2 < 24_576


def test_load_artifact_unknown_name() -> None:
    with pytest.raises(FileNotFoundError):
        load_artifact("NoSuchContract")


def test_compilation_error_carries_solc_message(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "brownie-config.yaml", tmp_path / "brownie-config.yaml")
    (tmp_path / "contracts" / "src").mkdir(parents=True)
    (tmp_path / "contracts" / "bin").symlink_to(PROJECT_ROOT / "contracts" / "bin")
    (tmp_path / "contracts" / "src" / "Broken.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.37;\ncontract Broken { uint x = ; }\n"
    )
    with pytest.raises(CompilationError, match="Broken.sol"):
        compile_contracts(project_root=tmp_path)
