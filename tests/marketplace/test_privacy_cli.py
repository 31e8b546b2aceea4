"""``sterling privacy epsilon | noise | audit`` through typer's test runner (in process)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import torch
from typer.testing import CliRunner

from sterling.cli import app

runner = CliRunner()


def sterling(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["privacy", *args])
    return result.exit_code, result.stdout, result.stderr


def test_epsilon_json_reproduces_tf_privacy_from_epochs() -> None:
    # tensorflow/privacy compute_dp_sgd_privacy_test.py 'Test0': n = 60000, batch 150, σ = 1.3,
    # 15 epochs, δ = 1e-5 → ε = 0.7242234026109595 (steps = ceil(15 / 0.0025) = 6000).
    code, out, err = sterling("epsilon", "--sample-rate", str(150 / 60000), "--noise-multiplier", "1.3", "--epochs", "15", "--delta", "1e-5", "--json")
    assert code == 0, err
    assert json.loads(out) == {"epsilon": pytest.approx(0.7242234026109595, rel=1e-9)}


def test_epsilon_human_output_shows_inputs_and_result() -> None:
    code, out, _ = sterling("epsilon", "-q", "0.04", "-s", "1.5", "--steps", "2250", "--delta", "1e-5")
    assert code == 0
    assert "7.32911" in out and "2,250" in out and "rdp" in out  # Opacus accountants_test: 7.32911117143


def test_epsilon_with_prv_is_tighter() -> None:
    args = ("epsilon", "-q", "0.04", "-s", "1.5", "--steps", "2250", "--delta", "1e-5", "--json")
    rdp = json.loads(sterling(*args)[1])["epsilon"]
    prv = json.loads(sterling(*args, "--accountant", "prv")[1])["epsilon"]
    assert 0 < prv < rdp


def test_noise_json_reproduces_opacus() -> None:
    # pytorch/opacus accountants_test.py test_get_noise_multiplier_rdp_epochs: ε = 8, δ = 1e-5,
    # q = 0.04, 90 epochs → 1.416 (4 places).
    code, out, err = sterling("noise", "--target-epsilon", "8", "--sample-rate", "0.04", "--epochs", "90", "--delta", "1e-5", "--json")
    assert code == 0, err
    assert json.loads(out) == {"noise_multiplier": pytest.approx(1.416, abs=5e-5)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("epsilon", "-q", "0", "-s", "1", "--steps", "10", "--delta", "1e-5"), "--sample-rate"),
        (("epsilon", "-q", "1.5", "-s", "1", "--steps", "10", "--delta", "1e-5"), "--sample-rate"),
        (("epsilon", "-q", "0.1", "-s", "0", "--steps", "10", "--delta", "1e-5"), "--noise-multiplier"),
        (("epsilon", "-q", "0.1", "-s", "-1", "--steps", "10", "--delta", "1e-5"), "--noise-multiplier"),
        (("epsilon", "-q", "0.1", "-s", "1", "--steps", "10", "--delta", "1"), "--delta"),
        (("epsilon", "-q", "0.1", "-s", "1", "--steps", "10", "--delta", "0"), "--delta"),
        (("epsilon", "-q", "0.1", "-s", "1", "--steps", "-3", "--delta", "1e-5"), "--steps"),
        (("epsilon", "-q", "0.1", "-s", "1", "--delta", "1e-5"), "exactly one"),
        (("epsilon", "-q", "0.1", "-s", "1", "--steps", "3", "--epochs", "1", "--delta", "1e-5"), "exactly one"),
        (("epsilon", "-q", "0.1", "-s", "1", "--steps", "3", "--delta", "1e-5", "--accountant", "gdp"), "gdp"),
        (("noise", "-e", "0", "-q", "0.1", "--steps", "10", "--delta", "1e-5"), "--target-epsilon"),
        (("noise", "-e", "1e-6", "-q", "1", "--steps", "1000", "--delta", "1e-5"), "too low"),
        (("audit", "--epsilon", "2", "--non-private"), "exactly one"),
        (("audit",), "exactly one"),
        (("audit", "--non-private", "--canaries", "0"), "--canaries"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(args: tuple[str, ...], message: str) -> None:
    code, out, err = sterling(*args)
    assert code == 2
    assert message in " ".join(err.replace("│", " ").split())
    assert "Traceback" not in out + err


@pytest.fixture
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny MLP: one thread is faster, and robust to a busy machine
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_audit_json_of_a_non_private_run() -> None:
    code, out, err = sterling("audit", "--non-private", "--canaries", "200", "--seed", "0", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"epsilon_lower_bound", "confidence", "canaries", "guesses", "correct", "epsilon_target", "delta"}
    assert doc["epsilon_target"] is None and doc["canaries"] == 200 and doc["guesses"] == 50 and doc["confidence"] == 0.95
    assert doc["epsilon_lower_bound"] >= 2.5  # 50 of 50 right: about 2.76 at δ = 1e-5
