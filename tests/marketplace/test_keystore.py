"""Encrypted keystores: published vectors of geth (Web3 Secret Storage) and Foundry, round trips, refusals."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from eth_account import Account

from marketplace.keystore import KeystoreError, Keystores, read_keystore, unlock

VECTORS = Path(__file__).parents[1] / "fixtures" / "keystores"
GETH = json.loads((VECTORS / "geth-basic_tests.json").read_text())
FOUNDRY = VECTORS / "foundry-ec554aeafe75601aaab43bd4621a22284db566c2.json"


@pytest.mark.parametrize("name", ["test1", "test2"])  # PBKDF2 and scrypt
def test_the_web3_secret_storage_vectors_unlock_to_their_keys(name: str, tmp_path: Path) -> None:
    vector = GETH[name]
    path = tmp_path / "vector.json"
    path.write_text(json.dumps(vector["json"]))
    account = unlock(path, vector["password"])
    assert account.key.hex() == vector["priv"]
    with pytest.raises(KeystoreError, match="wrong password"):
        unlock(path, vector["password"] + "x")


def test_foundry_s_keystore_imports_and_signs_as_its_address(tmp_path: Path) -> None:
    store = Keystores(tmp_path / "keystores")
    entry = store.add_file("cast", FOUNDRY, "keystorepassword")
    assert entry.address == "0xeC554aeAFE75601AaAb43Bd4621A22284dB566C2"  # what `cast wallet address` prints for it
    assert store.unlock("cast", "keystorepassword").address == entry.address
    assert json.loads(entry.path.read_text()) == json.loads(FOUNDRY.read_text())  # kept as Foundry wrote it
    with pytest.raises(KeystoreError, match="wrong password"):
        store.add_file("cast2", FOUNDRY, "keystore password")
    assert [e.name for e in store.entries()] == ["cast"]  # the refused import left nothing behind


def test_a_new_account_round_trips_and_is_readable_by_eth_account_as_geth_writes_it(tmp_path: Path) -> None:
    store = Keystores(tmp_path / "ks")
    entry = store.create("alice", "correct horse", light=True)
    document = read_keystore(entry.path)
    assert document["crypto"]["kdf"] == "scrypt" and document["crypto"]["kdfparams"]["n"] == 4096
    assert Account.from_key(Account.decrypt(document, "correct horse")).address == entry.address
    assert stat.S_IMODE(entry.path.stat().st_mode) == 0o600 and stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    assert store.unlock("alice", "correct horse").address == entry.address
    assert [(e.name, e.address) for e in store.entries()] == [("alice", entry.address)]


def test_the_standard_cost_is_scrypt_n_2_18(tmp_path: Path) -> None:
    entry = Keystores(tmp_path).add_key("bob", b"\x11" * 32, "pw")
    assert read_keystore(entry.path)["crypto"]["kdfparams"]["n"] == 1 << 18
    assert entry.address == Account.from_key(b"\x11" * 32).address


def test_refusals_are_clear_and_change_nothing(tmp_path: Path) -> None:
    store = Keystores(tmp_path / "ks")
    first = store.create("alice", "pw", light=True)
    before = first.path.read_bytes()
    with pytest.raises(KeystoreError, match="already exists"):
        store.create("alice", "other", light=True)
    assert first.path.read_bytes() == before
    for bad in ("", "../escape", ".hidden", "a/b", "x" * 65):
        with pytest.raises(KeystoreError, match="not an account name"):
            store.create(bad, "pw", light=True)
    with pytest.raises(KeystoreError, match="empty password"):
        store.create("carol", "", light=True)
    with pytest.raises(KeystoreError, match=r"no account 'dave' .*accounts: alice"):
        store.unlock("dave", "pw")
    junk = tmp_path / "junk.json"
    junk.write_text('{"version": 4}')
    with pytest.raises(KeystoreError, match="not a version-3 keystore"):
        store.add_file("junk", junk, "pw")
    junk.write_text("not json")
    with pytest.raises(KeystoreError, match="not JSON"):
        unlock(junk, "pw")
    (store.folder / "notes").write_text("not a keystore")  # a stray file is not listed
    assert [e.name for e in store.entries()] == ["alice"]
    assert not any(p.name.startswith(".") for p in store.folder.iterdir())  # no temporary left


def test_a_keystore_whose_address_field_lies_is_refused(tmp_path: Path) -> None:
    document = Account.encrypt(b"\x22" * 32, "pw", kdf="scrypt", iterations=4096)
    document["address"] = Account.from_key(b"\x33" * 32).address[2:].lower()
    path = tmp_path / "liar.json"
    path.write_text(json.dumps(document))
    with pytest.raises(KeystoreError, match="says it holds"):
        unlock(path, "pw")
