"""Privacy accounting against published reference values (Opacus, TF Privacy, Microsoft's PRV accountant).

Each reference quotes its repository, file and value. Sterling's RDP orders (``RDP_ORDERS``) are
Opacus's default grid extended upwards; on a larger grid the minimum over orders can only be
equal or smaller, so where a reference used a grid whose optimum we do not share, the test
reproduces it with the reference's own orders through Opacus's RDP analysis and checks that
ours is no larger.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.analysis import rdp as rdp_analysis

from enclave_worker.trusted import accounting
from enclave_worker.trusted.accounting import epsilon, noise_multiplier

# Opacus notes when the optimum sits at the edge of the order grid; the values are still valid bounds.
pytestmark = pytest.mark.filterwarnings("ignore:Optimal order is the (largest|smallest) alpha:UserWarning")

# --- RDP ------------------------------------------------------------------------------------


def test_opacus_rdp_accountant_reference() -> None:
    # pytorch/opacus, opacus/tests/accountants_test.py, test_rdp_accountant:
    # σ = 1.5, q = 0.04, steps = int(90 / 0.04), δ = 1e-5 → ε = 7.32911117143 (assertAlmostEqual, 7 places).
    assert epsilon(sample_rate=0.04, noise_multiplier=1.5, steps=int(90 / 0.04), delta=1e-5) == pytest.approx(7.32911117143, abs=5e-8)


@pytest.mark.parametrize(
    ("n", "batch_size", "sigma", "epochs", "delta", "expected_eps"),
    [
        # tensorflow/privacy, tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py,
        # test_compute_dp_sgd_privacy 'Test0' and 'Test1' (optimal orders 19 and 13, on both grids).
        (60000, 150, 1.3, 15, 1e-5, 0.7242234026109595),
        (100000, 100, 1.0, 30, 1e-7, 1.4154988495444842),
    ],
)
def test_tf_privacy_compute_dp_sgd_privacy_references(
    n: int, batch_size: int, sigma: float, epochs: int, delta: float, expected_eps: float
) -> None:
    steps = math.ceil(epochs * n / batch_size)  # TF Privacy: int(math.ceil(epochs * n / batch_size)), q = batch_size / n
    assert epsilon(sample_rate=batch_size / n, noise_multiplier=sigma, steps=steps, delta=delta) == pytest.approx(expected_eps, rel=1e-9)


def test_tf_privacy_reference_on_its_own_grid_and_ours_no_larger() -> None:
    # tensorflow/privacy, compute_dp_sgd_privacy_test.py 'Test2': n = 1e8, batch 1024, σ = 0.1,
    # 10 epochs, δ = 1e-7 → ε = 5907982.3113978775 at order 1.25, the smallest order of TF Privacy's
    # grid [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5] + 5..63 + [128, 256, 512]. Our grid
    # reaches down to order 1.1, where this (useless) guarantee is far smaller.
    expected = 5907982.3113978775
    q, steps, delta = 1024 / 100_000_000, math.ceil(10 * 100_000_000 / 1024), 1e-7
    tf_orders = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, *range(5, 64), 128, 256, 512]
    rdp = rdp_analysis.compute_rdp(q=q, noise_multiplier=0.1, steps=steps, orders=tf_orders)
    with pytest.warns(UserWarning, match="smallest alpha"):
        reproduced, order = rdp_analysis.get_privacy_spent(orders=tf_orders, rdp=rdp, delta=delta)
    assert (reproduced, order) == (pytest.approx(expected, rel=1e-9), 1.25)
    with pytest.warns(UserWarning, match="smallest alpha"):
        ours = epsilon(sample_rate=q, noise_multiplier=0.1, steps=steps, delta=delta)
    assert ours <= expected


def test_tf_privacy_statement_poisson_epsilon_with_microbatching() -> None:
    # tensorflow/privacy, compute_dp_sgd_privacy_test.py, test_dp_sgd_privacy_statement_no_user_dp_with_rdp:
    # 10,000 examples, batch 64, σ = 2.0, 5 epochs, δ = 1e-6, "with microbatching" →
    # "Epsilon assuming Poisson sampling (*): 1.616". With microbatching one example moves a
    # microbatch's clipped sum by up to 2C, so TF Privacy accounts it at σ / 2 = 1.0.
    steps = math.ceil(5 * 10_000 / 64)
    assert round(epsilon(sample_rate=64 / 10_000, noise_multiplier=2.0 / 2, steps=steps, delta=1e-6), 3) == 1.616


@pytest.mark.parametrize(
    ("steps", "expected_sigma"),
    [
        # pytorch/opacus, opacus/tests/accountants_test.py: test_get_noise_multiplier_rdp_epochs
        # (ε = 8, δ = 1e-5, q = 0.04, 90 epochs → 1.416, 4 places) and
        # test_get_noise_multiplier_rdp_steps (2000 steps → 1.3562, 4 places).
        (int(90 / 0.04), 1.416),
        (2000, 1.3562),
    ],
)
def test_opacus_noise_multiplier_references(steps: int, expected_sigma: float) -> None:
    sigma = noise_multiplier(target_epsilon=8.0, delta=1e-5, sample_rate=0.04, steps=steps)
    assert sigma == pytest.approx(expected_sigma, abs=5e-5)


# --- PRV ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sigma", "q", "steps", "expected_eps"),
    [
        # pytorch/opacus, opacus/tests/prv_accountant.py, msr_values "Computed from
        # https://github.com/microsoft/prv_accountant", δ = 1e-6, checked to 5 places.
        (0.8, 0.001, 100, 0.270403364058018680360362395731),
        (3.0, 0.001, 1000, 0.0476159308713589302097801692071),
        (0.8, 0.05, 100, 6.74105193941409996938318727189),
        (1.5, 0.05, 1000, 6.20996924657726712126759593957),
        (3.0, 0.2, 100, 3.38122051022184422208738396876),
        (2.0, 0.001, 100000, 0.706719901081851564761393547087),
    ],
)
def test_microsoft_prv_references(sigma: float, q: float, steps: int, expected_eps: float) -> None:
    ours = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=1e-6, accountant="prv")
    assert ours == pytest.approx(expected_eps, abs=5e-6)


@pytest.mark.parametrize(
    ("q", "sigma", "steps", "delta", "pld_eps"),
    [
        # tensorflow/privacy, compute_dp_sgd_privacy_test.py, test_compute_dp_sgd_example_privacy
        # 'no_microbatching_with_subsampling_pld': 1.2 epochs, σ = 0.7, q = 1e-2, δ = 1e-5 → 2.4612381.
        (1e-2, 0.7, 120, 1e-5, 2.4612381),
        # ... test_dp_sgd_privacy_statement_no_user_dp_with_pld: Poisson, PLD accounting → 1.199
        # (batch 64 of 10,000, σ = 2.0 with microbatching, i.e. 1.0; 5 epochs; δ = 1e-6).
        (64 / 10_000, 1.0, 782, 1e-6, 1.199),
    ],
)
def test_prv_agrees_with_tf_privacy_pld(q: float, sigma: float, steps: int, delta: float, pld_eps: float) -> None:
    # PLD (Google's dp_accounting) and PRV are both near-exact numerical accountants with their
    # own discretisation error (Opacus's PRV: eps_error 0.01); they agree to 1%, and both are
    # well below RDP for the same run.
    ours = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta, accountant="prv")
    assert ours == pytest.approx(pld_eps, rel=1e-2)
    assert ours < epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=delta, accountant="rdp")


# --- properties -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_epsilon_is_monotone_in_steps_rate_and_noise(name: accounting.AccountantName) -> None:
    def eps(q: float = 0.01, sigma: float = 1.0, steps: int = 1000) -> float:
        return epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=1e-5, accountant=name)

    by_steps = [eps(steps=t) for t in (10, 100, 1000, 5000)]
    by_rate = [eps(q=q) for q in (0.001, 0.005, 0.01, 0.05)]
    by_noise = [eps(sigma=s) for s in (0.7, 1.0, 2.0, 4.0)]
    assert by_steps == sorted(by_steps) and len(set(by_steps)) == 4
    assert by_rate == sorted(by_rate) and len(set(by_rate)) == 4
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 4


@given(
    steps=st.integers(1, 5000),
    q=st.floats(1e-4, 1.0),
    sigma=st.floats(0.5, 20.0),
    extra=st.integers(1, 500),
)
@settings(max_examples=15, deadline=None)
def test_rdp_epsilon_grows_with_steps(steps: int, q: float, sigma: float, extra: int) -> None:
    shorter = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=1e-5)
    longer = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps + extra, delta=1e-5)
    assert 0 < shorter <= longer


@given(sigma=st.floats(0.6, 4.0), q=st.floats(1e-3, 0.1), steps=st.integers(50, 3000))
@settings(max_examples=24, deadline=None)
def test_noise_multiplier_inverts_epsilon(sigma: float, q: float, steps: int) -> None:
    target = epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=1e-5)
    found = noise_multiplier(target_epsilon=target, delta=1e-5, sample_rate=q, steps=steps)
    reached = epsilon(sample_rate=q, noise_multiplier=found, steps=steps, delta=1e-5)
    # The search returns the σ of a bisection bracket whose ε is within the target and no more
    # than the tolerance (0.005) below it; ε falls strictly as σ grows, so σ itself is recovered
    # from above.
    assert target - 0.005 - 1e-9 <= reached <= target + 1e-9
    assert sigma * (1 - 1e-9) <= found <= sigma * 1.1


def test_no_steps_spend_nothing_and_bad_inputs_are_refused() -> None:
    assert epsilon(sample_rate=0.5, noise_multiplier=1.0, steps=0, delta=1e-5) == 0.0
    for bad in (
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"noise_multiplier": 0.0},
        {"noise_multiplier": math.inf},
        {"steps": -1},
        {"delta": 0.0},
        {"delta": 1.0},
    ):
        args = {"sample_rate": 0.1, "noise_multiplier": 1.0, "steps": 10, "delta": 1e-5} | bad
        with pytest.raises(ValueError):
            epsilon(**args)  # type: ignore[arg-type]


# --- Opacus loaded in part ------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Opacus's PRV at q = 1 takes log(0)
@pytest.mark.parametrize("name", ["rdp", "prv"])
@pytest.mark.parametrize(
    ("target", "q", "steps", "delta"),
    [(1.0, 256 / 60000, 60 * 234, 1e-5), (0.3, 0.01, 500, 1e-6), (8.0, 0.2, 40, 1e-5), (3.0, 1.0, 5, 1e-5)],
)
def test_noise_search_equals_opacus_get_noise_multiplier(
    name: accounting.AccountantName, target: float, q: float, steps: int, delta: float
) -> None:
    from opacus.accountants.utils import get_noise_multiplier

    kwargs = {"alphas": list(accounting.RDP_ORDERS)} if name == "rdp" else {}
    ours = noise_multiplier(target_epsilon=target, delta=delta, sample_rate=q, steps=steps, accountant=name, tolerance=0.005)
    theirs = get_noise_multiplier(
        target_epsilon=target, target_delta=delta, sample_rate=q, steps=steps, accountant=name, epsilon_tolerance=0.005, **kwargs
    )
    assert ours == theirs


def test_budget_too_small_for_any_noise_is_refused() -> None:
    with pytest.raises(ValueError, match="privacy budget is too low"):
        noise_multiplier(target_epsilon=1e-9, delta=1e-12, sample_rate=1.0, steps=10_000)


def test_rdp_analysis_loaded_from_opacus_is_opacus_s() -> None:
    assert accounting.rdp_analysis.__file__ == rdp_analysis.__file__
    orders = list(accounting.RDP_ORDERS)
    assert list(accounting.rdp_analysis.compute_rdp(q=0.01, noise_multiplier=1.1, steps=7, orders=orders)) == list(
        rdp_analysis.compute_rdp(q=0.01, noise_multiplier=1.1, steps=7, orders=orders)
    )


def test_a_trainer_enclave_starts_without_opacus_whole() -> None:
    """The enclave's entry point, and an RDP job's accounting, leave Opacus's package (with SciPy's
    statistics and signal processing, ~100 MiB resident with what they pull in) unimported."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "import enclave_worker.trusted.main\n"
        "from enclave_worker.trusted import accounting\n"
        "accounting.noise_multiplier(target_epsilon=1.0, delta=1e-5, sample_rate=0.01, steps=100)\n"
        "print(sorted(m for m in ('opacus', 'scipy.stats', 'scipy.signal') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
