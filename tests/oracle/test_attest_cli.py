"""``sterling attest verify`` as a user runs it: a subprocess, exit status, stdout and stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_worker.sim_platform import SimPlatform
from tests.oracle.nitro_fakes import (
    BASE,
    BASE_T,
    EVERVAULT,
    EVERVAULT_T,
    expected_output,
)

pytestmark = pytest.mark.slow  # each call starts a Python process (~4 s: oracle imports web3 and torch)
REPO = Path(__file__).resolve().parents[2]
BASE_PCR0 = expected_output(BASE)["pcrs"]["0"]


def sterling(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sterling.cli", "attest", "verify", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )


def test_a_valid_document_prints_its_measurement_and_pcrs() -> None:
    done = sterling(BASE / "attestation.cose", "--format", "aws-nitro", "--at", str(BASE_T), "--expect-pcr0", BASE_PCR0)
    assert done.returncode == 0, done.stderr
    assert BASE_PCR0 in done.stdout and expected_output(BASE)["module_id"] in done.stdout
    assert expected_output(BASE)["public_key"] in done.stdout and "VALID" in done.stdout


def test_json_output_parses_and_holds_the_reference_values() -> None:
    done = sterling(BASE / "attestation.b64", "--at", str(BASE_T), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    expected = expected_output(BASE)
    assert result["valid"] is True and result["format"] == "aws-nitro"
    assert result["pcrs"] == expected["pcrs"] and result["module_id"] == expected["module_id"]
    assert (result["public_key"], result["user_data"], result["nonce"]) == (expected["public_key"], None, None)
    assert result["timestamp_ms"] == expected["timestamp_ms"] and len(bytes.fromhex(result["measurement"])) == 32


def test_a_tampered_document_fails_with_one_line() -> None:
    done = sterling(BASE / "tampered" / "pcr0_bitflip.cose", "--at", str(BASE_T), "--json")
    assert done.returncode == 1
    assert done.stderr == "invalid: COSE signature invalid\n"
    assert json.loads(done.stdout) == {"valid": False, "reason": "COSE signature invalid"}


def test_the_debug_document_is_refused_unless_allowed() -> None:
    done = sterling(EVERVAULT / "attestation.cose", "--at", str(EVERVAULT_T))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("invalid: ") and "debug" in done.stderr
    done = sterling(EVERVAULT / "attestation.cose", "--at", str(EVERVAULT_T), "--allow-debug", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["pcrs"] == expected_output(EVERVAULT)["pcrs"] and result["nonce"] == expected_output(EVERVAULT)["nonce"]


def test_a_pcr_mismatch_and_a_wrong_time_fail() -> None:
    done = sterling(BASE / "attestation.cose", "--at", str(BASE_T), "--expect-pcr", "0=" + "00" * 48)
    assert done.returncode == 1 and done.stderr.startswith("invalid: measurement mismatch: PCR0")
    done = sterling(BASE / "attestation.cose", "--at", str(BASE_T + 3 * 3600))
    assert done.returncode == 1 and done.stderr.startswith("invalid: certificate not valid at T")


def test_sim_evidence_with_the_platform_key(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "platform.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "evidence.cbor").write_bytes(SimPlatform(key).quote(b"\x33" * 32, b"\x44" * 32))
    done = sterling(tmp_path / "evidence.cbor", "--format", "sim", "--platform-key", tmp_path / "platform.pub", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["measurement"] == "33" * 32
    (tmp_path / "other.key").write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    done = sterling(tmp_path / "evidence.cbor", "--format", "sim", "--platform-key", tmp_path / "other.key")
    assert done.returncode == 1 and done.stderr.startswith("invalid: ") and done.stderr.count("\n") == 1
