"""Compile Sterling's Solidity contracts and read the committed artifacts.

The compiler settings (solc version, EVM version, optimizer, remappings) and the source and
build folders come from ``brownie-config.yaml`` at the project root (by default the source
checkout, :func:`marketplace.config.checkout_root`); nothing here hard-codes them. Compiling
needs ``py-solc-x`` and the solc wrapper ``contracts/bin/solc`` (solcjs from ``node_modules``);
reading artifacts with :func:`marketplace.abi.load_artifact` needs neither, so the runtime works
without a compiler.

Example:
    Regenerate the committed artifacts after editing a contract::

        python -m marketplace.compile
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import yaml

from .abi import Artifact
from .config import CONFIG_FILE_NAME, checkout_root

__all__ = [
    "CompilationError",
    "compile_contracts",
    "compile_test_contracts",
    "write_artifacts",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = CONFIG_FILE_NAME
SOLC_WRAPPER = Path("contracts") / "bin" / "solc"
TEST_CONTRACTS_DIR = "test"
"""Test helper contracts live in ``<contracts parent>/test`` and build to ``<build>/test``."""

_OUTPUT_SELECTION = ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]



class CompilationError(Exception):
    """Solidity compilation failed; the message holds solc's error messages."""


def _project_root(project_root: Path | None) -> Path:
    """``project_root``, else the source checkout (which holds ``brownie-config.yaml``, ``contracts/``, ``node_modules/``).

    Raises:
        CompilationError: no root given and the SDK does not run from a source checkout.
    """
    root = project_root if project_root is not None else checkout_root()
    if root is None:
        raise CompilationError("compiling needs a source checkout: pass project_root (the folder holding brownie-config.yaml)")
    return root


def _read_config(project_root: Path) -> dict[str, Any]:
    """Load ``brownie-config.yaml`` from ``project_root``.

    Raises:
        CompilationError: the file is missing or lacks the compiler section.
    """
    path = project_root / CONFIG_FILE
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise CompilationError(f"cannot read compiler settings from {path}: {e}") from e
    if not isinstance(config, dict) or not isinstance(config.get("compiler"), dict):
        raise CompilationError(f"{path} has no 'compiler' section")
    return config


def _folders(config: dict[str, Any]) -> tuple[Path, Path]:
    """Return the (contracts source, build) folders, relative to the project root."""
    structure = config.get("project_structure") or {}
    try:
        return Path(structure["contracts"]), Path(structure["build"])
    except KeyError as e:
        raise CompilationError(f"{CONFIG_FILE} lacks project_structure.{e.args[0]}") from e


def _solc_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Translate the Brownie ``compiler`` section into standard-JSON ``settings``."""
    compiler = config["compiler"]
    solc = compiler.get("solc") or {}
    optimizer = solc.get("optimizer") or {}
    settings: dict[str, Any] = {
        "optimizer": {"enabled": bool(optimizer.get("enabled", False))},
        "remappings": list(solc.get("remappings") or []),
        "outputSelection": {"*": {"*": list(_OUTPUT_SELECTION)}},
    }
    if optimizer.get("runs") is not None:
        settings["optimizer"]["runs"] = int(optimizer["runs"])
    if compiler.get("evm_version"):
        settings["evmVersion"] = str(compiler["evm_version"])
    if solc.get("via_ir"):
        settings["viaIR"] = True
    return settings


def _sources(project_root: Path, folders: list[Path]) -> dict[str, dict[str, str]]:
    """Read every ``.sol`` file under ``folders`` as standard-JSON sources.

    Source unit names are POSIX paths relative to the project root, so relative imports
    (``./IJobMarket.sol``) and remapped imports (``@openzeppelin/...``) resolve alike.
    """
    sources: dict[str, dict[str, str]] = {}
    for folder in folders:
        for path in sorted((project_root / folder).rglob("*.sol")):
            name = path.relative_to(project_root).as_posix()
            sources[name] = {"content": path.read_text(encoding="utf-8")}
    return sources


def _run_solc(project_root: Path, config: dict[str, Any], input_json: dict[str, Any]) -> dict[str, Any]:
    """Run the configured solc on ``input_json`` and return its standard-JSON output.

    Raises:
        CompilationError: wrong compiler version, or solc reported errors.
    """
    # Deferred: only compiling needs py-solc-x.
    import solcx
    from solcx.exceptions import SolcError
    from solcx.wrapper import get_solc_version

    binary = project_root / SOLC_WRAPPER
    wanted = str((config["compiler"].get("solc") or {}).get("version", ""))
    try:
        found = str(get_solc_version(binary))
    except (OSError, SolcError) as e:
        raise CompilationError(f"cannot run solc at {binary}: {e}") from e
    if wanted and found != wanted:
        raise CompilationError(f"{CONFIG_FILE} asks for solc {wanted}, {binary} is {found}")

    logger.info("compiling %d sources with solc %s", len(input_json["sources"]), found)
    try:
        output: dict[str, Any] = solcx.compile_standard(
            input_json,
            solc_binary=binary,
            base_path=project_root,
            allow_paths=[project_root],
        )
    except SolcError as e:
        raise CompilationError(f"solc failed:\n{e.message}") from e
    except (OSError, json.JSONDecodeError) as e:
        raise CompilationError(f"cannot run solc at {binary}: {e}") from e

    errors = [err for err in output.get("errors", []) if err.get("severity") == "error"]
    if errors:  # py-solc-x raises on these already; kept for other solc front ends
        raise CompilationError("solc failed:\n" + "\n".join(e["formattedMessage"] for e in errors))
    for warning in output.get("errors", []):
        logger.warning("solc: %s", warning.get("formattedMessage", warning.get("message")))
    return output


def _deployable(output: dict[str, Any], prefix: str) -> dict[str, Artifact]:
    """Collect contracts with bytecode whose source lies under ``prefix``.

    Interfaces and abstract contracts have no bytecode and are left out.

    Raises:
        CompilationError: two deployable contracts share a name.
    """
    artifacts: dict[str, Artifact] = {}
    for source_name, contracts in sorted(output.get("contracts", {}).items()):
        if not source_name.startswith(prefix):
            continue
        for name, data in sorted(contracts.items()):
            bytecode = data["evm"]["bytecode"]["object"]
            if not bytecode:
                continue
            if name in artifacts:
                raise CompilationError(f"two deployable contracts are named {name}")
            artifacts[name] = {
                "abi": data["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
            }
    return artifacts


def _compile(project_root: Path, *, include_tests: bool) -> dict[str, Artifact]:
    """Compile the sources (plus test helpers if asked) and return the deployable artifacts."""
    config = _read_config(project_root)
    src, _build = _folders(config)
    folders = [src]
    wanted = src
    if include_tests:
        wanted = src.parent / TEST_CONTRACTS_DIR
        folders.append(wanted)
    sources = _sources(project_root, folders)
    if not sources:
        raise CompilationError(f"no Solidity sources under {', '.join(map(str, folders))}")
    input_json = {"language": "Solidity", "sources": sources, "settings": _solc_settings(config)}
    output = _run_solc(project_root, config, input_json)
    artifacts = _deployable(output, wanted.as_posix() + "/")
    logger.info("compiled %s", ", ".join(sorted(artifacts)))
    return artifacts


def compile_contracts(*, project_root: Path | None = None) -> dict[str, Artifact]:
    """Compile ``contracts/src/**/*.sol`` with the settings of ``brownie-config.yaml``.

    Args:
        project_root: the folder holding the config, sources and ``node_modules`` (default: the
            source checkout).

    Returns:
        ``{ContractName: {"abi": [...], "bytecode": "0x...", "deployedBytecode": "0x..."}}`` for
        every deployable contract (currently ``EnclaveRegistry`` and ``JobMarket``).

    Raises:
        CompilationError: the config is unreadable, the compiler is missing or the wrong
            version, or solc reported errors (its messages are in the exception).

    Example:
        >>> artifacts = compile_contracts()  # doctest: +SKIP
        >>> sorted(artifacts)  # doctest: +SKIP
        ['EnclaveRegistry', 'JobMarket']
    """
    return _compile(_project_root(project_root), include_tests=False)


def compile_test_contracts(*, project_root: Path | None = None) -> dict[str, Artifact]:
    """Compile the test helper contracts under ``contracts/test/`` (with the sources they import).

    Returns:
        The deployable test helpers, in the same shape as :func:`compile_contracts`.

    Raises:
        CompilationError: as for :func:`compile_contracts`.
    """
    return _compile(_project_root(project_root), include_tests=True)


def _write(folder: Path, artifacts: dict[str, Artifact]) -> list[Path]:
    """Write one ``<Name>.json`` per artifact (sorted keys, indent 2, trailing newline)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in sorted(artifacts.items()):
        path = folder / f"{name}.json"
        path.write_text(json.dumps(artifact, sort_keys=True, indent=2) + "\n", encoding="utf-8")
        logger.info("wrote %s", path)
        written.append(path)
    return written


WEB_ABI_PATH = Path("web/js/abi.js")
"""The browser's copy of the deployable contracts' ABIs (errors and events included)."""


def render_web_abi(artifacts: dict[str, Artifact]) -> str:
    """``web/js/abi.js``: one ``export const <NAME>_ABI = [...]`` per deployable contract."""
    lines = ["// Generated by `python -m marketplace.compile` from contracts/artifacts; do not edit.", ""]
    for name, artifact in sorted(artifacts.items()):
        constant = "".join("_" + c if c.isupper() and i else c for i, c in enumerate(name)).upper() + "_ABI"
        lines.append(f"export const {constant} = {json.dumps(artifact['abi'], sort_keys=True)};")
    return "\n".join(lines) + "\n"


def write_artifacts(*, project_root: Path | None = None) -> list[Path]:
    """Compile and write ``contracts/artifacts/<Name>.json`` (and ``contracts/artifacts/test/``)
    and the browser's ``web/js/abi.js``.

    Returns:
        The paths written.

    Raises:
        CompilationError: as for :func:`compile_contracts`.
    """
    project_root = _project_root(project_root)
    _src, build = _folders(_read_config(project_root))
    deployable = compile_contracts(project_root=project_root)
    written = _write(project_root / build, deployable)
    web_abi = project_root / WEB_ABI_PATH
    web_abi.parent.mkdir(parents=True, exist_ok=True)
    web_abi.write_text(render_web_abi(deployable), encoding="utf-8")
    written.append(web_abi)
    test_sources = project_root / _src.parent / TEST_CONTRACTS_DIR
    if any(test_sources.rglob("*.sol")):
        written += _write(
            project_root / build / TEST_CONTRACTS_DIR, compile_test_contracts(project_root=project_root)
        )
    return written



def slither_input(*, project_root: Path | None = None) -> dict[str, Any]:
    """The standard-JSON compiler input of ``contracts/src`` for Slither (``make lint``).

    The settings are the ones the artifacts are built with; ``outputSelection`` is left out so
    that crytic-compile asks for the ASTs and source maps it needs.
    """
    root = _project_root(project_root)
    config = _read_config(root)
    src, _build = _folders(config)
    settings = _solc_settings(config)
    settings.pop("outputSelection", None)
    return {"language": "Solidity", "sources": _sources(root, [src]), "settings": settings}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m marketplace.compile``: write the artifacts, list them.

    ``--slither-input PATH`` writes the standard-JSON input for Slither to PATH instead.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--slither-input"] and len(args) == 2:
        out = Path(args[1])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(slither_input()), encoding="utf-8")
        return 0
    if args:
        print("usage: python -m marketplace.compile [--slither-input PATH]", file=sys.stderr)
        return 2
    try:
        root = _project_root(None)
        written = write_artifacts(project_root=root)
    except CompilationError as e:
        logger.error("%s", e)
        return 1
    for path in written:
        print(path.relative_to(root).as_posix())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
