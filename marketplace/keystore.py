"""Accounts kept the way Ethereum's tools keep them: encrypted JSON keystores.

A keystore is the Web3 Secret Storage format (version 3: the key encrypted with AES-128-CTR under
a key derived from a password by scrypt or PBKDF2, with a Keccak MAC) that geth, Foundry's ``cast
wallet`` and MetaMask's exports write; ``eth_account`` encrypts and decrypts it. A
:class:`Keystores` folder holds one file per account, named by the account's name and nothing else,
as Foundry's ``~/.foundry/keystores`` does, so either tool can use the other's folder. Files are
written mode 0600 in a folder of mode 0700, never overwritten, and a key is held in memory only
once unlocked. Sterling's default folder is ``~/.sterling/keystores`` (``STERLING_KEYSTORE_DIR``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from .errors import SterlingError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""An account's name: a letter or digit, then up to 63 letters, digits, ``_``, ``.`` or ``-``."""


STANDARD_SCRYPT_N = 1 << 18
LIGHT_SCRYPT_N = 1 << 12


class KeystoreError(SterlingError):
    """A keystore cannot be read, written or unlocked; the message says which and why (never the key)."""


def default_folder() -> Path:
    """``STERLING_KEYSTORE_DIR``, else ``~/.sterling/keystores``."""
    return Path(os.environ.get("STERLING_KEYSTORE_DIR") or Path.home() / ".sterling" / "keystores")


@dataclass(frozen=True)
class KeystoreEntry:
    """One account in a keystore folder (its address is read from the file, which needs no password)."""

    name: str
    address: str | None
    """Checksummed, or ``None`` when the file does not say (the format makes it optional)."""
    path: Path


def read_keystore(path: Path) -> dict[str, Any]:
    """The keystore JSON at ``path``, checked to be a version-3 keystore.

    Raises:
        KeystoreError: the file is missing, unreadable, not JSON, or not a version-3 keystore.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise KeystoreError(f"cannot read the keystore {path}: {e.strerror}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeystoreError(f"{path} is not a keystore: not JSON ({e})") from e
    if not isinstance(document, dict):
        raise KeystoreError(f"{path} is not a keystore: not a JSON object")
    crypto = document.get("crypto", document.get("Crypto"))
    if document.get("version") != 3 or not isinstance(crypto, dict):
        raise KeystoreError(f"{path} is not a version-3 keystore (Web3 Secret Storage, as geth, Foundry and MetaMask write)")
    if crypto.get("kdf") not in ("scrypt", "pbkdf2") or crypto.get("cipher") != "aes-128-ctr":
        raise KeystoreError(f"{path}: unsupported keystore kdf {crypto.get('kdf')!r} / cipher {crypto.get('cipher')!r}")
    return document


def unlock(path: Path, password: str) -> LocalAccount:
    """The account whose key the keystore at ``path`` holds.

    Raises:
        KeystoreError: not a keystore, a wrong password, or an address field that does not match the key.
    """
    document = read_keystore(path)
    try:
        key = Account.decrypt(document, password)
    except ValueError as e:  # eth_account says "MAC mismatch" for a wrong password
        raise KeystoreError(f"cannot unlock {path}: wrong password") from e
    account: LocalAccount = Account.from_key(key)
    recorded = document.get("address")
    if recorded and to_checksum_address(_hex_address(recorded)) != account.address:
        raise KeystoreError(f"{path} says it holds {recorded}, but its key is {account.address}'s")
    return account


def _hex_address(value: str) -> str:
    return value if value.startswith("0x") else f"0x{value}"


class Keystores:
    """A folder of named keystores."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_folder()

    def path(self, name: str) -> Path:
        """Where the account ``name`` is kept.

        Raises:
            KeystoreError: ``name`` is not a valid account name.
        """
        if not NAME.fullmatch(name):
            raise KeystoreError(
                f"{name!r} is not an account name: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        return self.folder / name

    def entries(self) -> list[KeystoreEntry]:
        """Every keystore in the folder, by name (files that are not keystores are left out)."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.iterdir()):
            if not path.is_file() or not NAME.fullmatch(path.name):
                continue
            try:
                document = read_keystore(path)
            except KeystoreError:
                continue
            address = document.get("address")
            found.append(KeystoreEntry(path.name, to_checksum_address(_hex_address(address)) if address else None, path))
        return found

    def entry(self, name: str) -> KeystoreEntry:
        """The account ``name``.

        Raises:
            KeystoreError: no such account here (the message lists the ones there are).
        """
        path = self.path(name)
        if not path.is_file():
            names = ", ".join(e.name for e in self.entries()) or "none"
            raise KeystoreError(f"no account {name!r} in {self.folder} (accounts: {names})")
        address = read_keystore(path).get("address")
        return KeystoreEntry(name, to_checksum_address(_hex_address(address)) if address else None, path)

    def unlock(self, name: str, password: str) -> LocalAccount:
        """The account ``name``, its key decrypted with ``password``."""
        return unlock(self.entry(name).path, password)

    def create(self, name: str, password: str, *, light: bool = False) -> KeystoreEntry:
        """A new account with a fresh random key, kept as ``name``."""
        return self.add_key(name, Account.create().key, password, light=light)

    def add_key(self, name: str, key: bytes, password: str, *, light: bool = False) -> KeystoreEntry:
        """Keep ``key`` as ``name``, encrypted with ``password`` by scrypt at the standard cost
        (N = 2¹⁸, about a second and 256 MiB to try one password), or with ``light`` at geth's
        ``--lightkdf`` cost (N = 2¹²: for development accounts and tests).

        Raises:
            KeystoreError: ``name`` is taken or invalid, the password is empty, or the folder cannot be written.
        """
        if not password:
            raise KeystoreError("an empty password would leave the key unprotected: choose one")
        path = self._free(name)
        document = Account.encrypt(key, password, kdf="scrypt", iterations=LIGHT_SCRYPT_N if light else STANDARD_SCRYPT_N)
        self._write(path, json.dumps(document).encode())
        return KeystoreEntry(name, to_checksum_address(_hex_address(str(document["address"]))), path)

    def add_file(self, name: str, source: Path, password: str) -> KeystoreEntry:
        """Keep a copy of a keystore written by another tool (geth, Foundry, MetaMask) as ``name``,
        once ``password`` unlocks it (so a typo is found now, not at the first transaction).

        Raises:
            KeystoreError: ``name`` is taken or invalid, ``source`` is not a keystore, or the password is wrong.
        """
        path = self._free(name)
        account = unlock(source, password)
        document = read_keystore(source)
        document.setdefault("address", account.address[2:].lower())
        self._write(path, json.dumps(document).encode())
        return KeystoreEntry(name, account.address, path)

    def _free(self, name: str) -> Path:
        path = self.path(name)
        if path.exists():
            raise KeystoreError(f"an account {name!r} already exists in {self.folder}: choose another name (nothing was changed)")
        return path

    def _write(self, path: Path, data: bytes) -> None:
        """Write ``path`` whole (mode 0600) or not at all, and never over another account's file."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{path.name}.")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.link(tmp, path)  # fails if the name was taken meanwhile, unlike a rename
            finally:
                os.unlink(tmp)
        except FileExistsError as e:
            raise KeystoreError(f"an account {path.name!r} already exists in {self.folder} (nothing was changed)") from e
        except OSError as e:
            raise KeystoreError(f"cannot write {path}: {e.strerror}") from e
