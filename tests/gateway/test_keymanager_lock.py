"""Two key managers never share a state folder: the second waits for the first to let go, or refuses."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from marketplace.errors import ConfigError
from sterling.keymanager_service import _state_locked


def test_a_second_key_manager_on_a_held_state_folder_refuses_after_waiting(tmp_path: Path) -> None:
    folder = tmp_path / "key-manager"
    with _state_locked(folder, wait=5):
        started = time.monotonic()
        refused = pytest.raises(ConfigError, match=r"another key manager has used the state folder .*key-manager for 0 s: stop it first")
        with refused, _state_locked(folder, wait=0.3):
            pytest.fail("two holders of one state folder")
        assert time.monotonic() - started >= 0.3
    with _state_locked(folder, wait=0):  # let go: the next one takes it at once
        pass


def test_a_starting_key_manager_takes_the_folder_once_the_stopping_one_lets_go(tmp_path: Path) -> None:
    folder = tmp_path / "key-manager"
    held, release = threading.Event(), threading.Event()

    def stopping_key_manager() -> None:
        with _state_locked(folder, wait=0):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=stopping_key_manager)
    thread.start()
    assert held.wait(10)
    threading.Timer(0.5, release.set).start()
    started = time.monotonic()
    with _state_locked(folder, wait=10):
        assert time.monotonic() - started >= 0.4
    thread.join(10)
