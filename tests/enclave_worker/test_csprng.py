"""The CSPRNG behind DP-SGD: ChaCha20 as documented, Gaussian noise of the right distribution with
the floating-point defence in place, uniforms that never reach 0, and Poisson samples at the rate.

The statistical tests use fixed seeds (deterministic) and bounds of several standard errors; each
bound is far tighter than the error a plausible bug would make (a wrong scale, a reused normal, a
shared Box–Muller pair, a repeated keystream).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from scipy import stats  # type: ignore[import-untyped]  # no stubs installed

from enclave_worker.trusted import csprng, dpsgd
from enclave_worker.trusted.csprng import ChaCha20Generator

N = 1_000_000


def _chacha20(key: bytes, stream: int, segment: int, length: int) -> bytes:
    """The keystream the module documents: nonce = stream (4 bytes) ‖ segment (8 bytes), counter 0."""
    nonce = bytes(4) + stream.to_bytes(4, "big") + segment.to_bytes(8, "big")
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(bytes(length))


def test_the_cipher_reads_its_nonce_as_rfc_8439_counter_then_nonce() -> None:
    # RFC 8439 §2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, block counter 1.
    nonce = (1).to_bytes(4, "little") + bytes.fromhex("000000090000004a00000000")
    block = Cipher(algorithms.ChaCha20(bytes(range(32)), nonce), mode=None).encryptor().update(bytes(32))
    assert block.hex() == "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"


def test_the_stream_is_chacha20_under_a_new_nonce_per_segment(monkeypatch: pytest.MonkeyPatch) -> None:
    key = bytes(range(32))
    assert ChaCha20Generator(key, stream=7).random_bytes(1000) == _chacha20(key, 7, 0, 1000)
    monkeypatch.setattr(csprng, "SEGMENT_BYTES", 256)
    rng = ChaCha20Generator(key, stream=7)
    got = rng.random_bytes(100) + rng.random_bytes(500)  # reads across two segment boundaries
    assert got == _chacha20(key, 7, 0, 256) + _chacha20(key, 7, 1, 256) + _chacha20(key, 7, 2, 88)
    blocks = [got[i : i + 64] for i in range(0, 576, 64)]
    assert len(set(blocks)) == len(blocks)  # no keystream block twice


def test_keys_and_streams_give_distinct_streams_and_a_seed_reproduces() -> None:
    first = ChaCha20Generator.from_seed(1).random_bytes(64)
    assert ChaCha20Generator.from_seed(1).random_bytes(64) == first
    others = [
        ChaCha20Generator.from_seed(2).random_bytes(64),
        ChaCha20Generator.from_seed(-1).random_bytes(64),
        ChaCha20Generator.from_seed(2**70).random_bytes(64),
        ChaCha20Generator.from_seed(1).substream(1).random_bytes(64),
        ChaCha20Generator.from_entropy().random_bytes(64),
        ChaCha20Generator.from_entropy().random_bytes(64),
    ]
    assert len({first, *others}) == 1 + len(others)
    # The seed's KDF is the documented one, so a test's stream can be rebuilt from its seed.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=csprng.SEED_KDF_SALT, info=csprng.SEED_KDF_INFO).derive(b"\x01")
    assert first == _chacha20(key, 0, 0, 64)
    assert ChaCha20Generator.from_seed(3).gaussian(10, std=1.0).tolist() == ChaCha20Generator.from_seed(3).gaussian(10, std=1.0).tolist()
    with pytest.raises(ValueError):
        ChaCha20Generator(bytes(16))
    assert "key" not in repr(ChaCha20Generator.from_seed(1)) and first.hex() not in repr(ChaCha20Generator.from_seed(1))


def test_uniforms_lie_strictly_inside_the_unit_interval_even_at_extreme_bits() -> None:
    extremes64 = np.array([0, 1, 2**52 - 1, 2**52, 2**64 - 1], dtype=np.uint64)
    assert csprng.open_unit_interval(extremes64).tolist() == [2**-53, 3 * 2**-53, 1 - 2**-53, 2**-53, 1 - 2**-53]
    extremes32 = np.array([0, 2**23 - 1, 2**32 - 1], dtype=np.uint32)
    assert csprng.open_unit_interval(extremes32).tolist() == [2**-24, 1 - 2**-24, 1 - 2**-24]
    radius = csprng.radius_uniform(np.array([0, -1, 2**62], dtype=np.int64), torch.float64)
    assert radius.tolist() == [2**-63, 1.0, 0.5]  # (0, 1]: the largest odd 63-bit number rounds to 1
    assert np.all(np.isfinite(np.log(csprng.radius_uniform(np.array([0], dtype=np.int64), torch.float32))))
    rng = ChaCha20Generator.from_seed(4)
    for dtype in (torch.float64, torch.float32):
        u = rng.uniform(N, dtype=dtype)
        assert u.dtype == dtype and float(u.min()) > 0 and float(u.max()) < 1
        assert float(u.mean()) == pytest.approx(0.5, abs=5 * math.sqrt(1 / 12 / N))
    assert float(rng.geometric((N,), 0.999).min()) == 1.0  # u near 1 still gives a gap of 1, never 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_has_the_moments_of_a_normal(dtype: torch.dtype) -> None:
    std = 0.37
    x = ChaCha20Generator.from_seed(5).gaussian(N, std=std, dtype=dtype)
    assert x.dtype == dtype and x.shape == (N,)
    z = x.double().numpy() / std
    se = 1 / math.sqrt(N)
    assert abs(z.mean()) < 5 * se
    assert z.var() == pytest.approx(1.0, abs=5 * math.sqrt(2) * se)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6) * se
    assert stats.kurtosis(z, fisher=False) == pytest.approx(3.0, abs=5 * math.sqrt(24) * se)
    # Tails as a normal's: |z| > 3 with probability 0.0027, > 4 with 6.3e-5.
    assert np.mean(np.abs(z) > 3) == pytest.approx(2 * stats.norm.sf(3), rel=0.1)
    assert np.mean(np.abs(z) > 4) == pytest.approx(2 * stats.norm.sf(4), rel=0.4)


@pytest.mark.parametrize("seed", [6, 7])
def test_noise_passes_kolmogorov_smirnov_against_the_standard_normal(seed: int) -> None:
    z = ChaCha20Generator.from_seed(seed).gaussian(N, std=1.0).double().numpy()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # The test has the power to notice a 1 % error in scale at this size.
    assert stats.kstest(z * 1.01, "norm").pvalue < 1e-3


def test_noise_values_and_steps_are_uncorrelated() -> None:
    rng = ChaCha20Generator.from_seed(8)
    steps = torch.stack([rng.gaussian(5000, std=1.0) for _ in range(200)]).double().numpy()
    bound = 5 / math.sqrt(steps.size)
    # Successive steps, and neighbouring values within a step (which share Box–Muller pairs:
    # value j takes the sines of the pairs whose cosines went to value j - 1).
    assert abs(np.corrcoef(steps[:-1].ravel(), steps[1:].ravel())[0, 1]) < bound
    assert abs(np.corrcoef(steps[:, :-1].ravel(), steps[:, 1:].ravel())[0, 1]) < bound
    # Dependence through a shared radius would show in the squares.
    assert abs(np.corrcoef(steps[:, :-1].ravel() ** 2, steps[:, 1:].ravel() ** 2)[0, 1]) < bound
    # Two steps' noise differ everywhere (a repeated keystream would repeat them).
    assert not np.any(steps[0] == steps[1])


def test_each_value_sums_four_normals_from_four_distinct_box_muller_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The floating-point defence: four summands per value, never both outputs of one pair together."""
    k = csprng.NOISE_SUMMANDS
    assert k == 4  # as Opacus's secure_mode
    for n in (1, 2, 5, 16):
        pairs = k * ((n + 1) // 2)
        summands: dict[int, list[tuple[str, int]]] = {j: [] for j in range(n)}
        for output in ("cos", "sin"):
            for pair in range(pairs):
                # Box–Muller replaced by one normal set to 1 (this pair's cosine or sine), all others 0.
                def marked(
                    u1: np.ndarray, u2: np.ndarray, out: np.ndarray, pair: int = pair, output: str = output, pairs: int = pairs
                ) -> None:
                    assert u1.shape == u2.shape and u1.size == pairs and out.shape == (2, *u1.shape)
                    out[...] = 0.0
                    out[0 if output == "cos" else 1].reshape(-1)[pair] = 1.0

                monkeypatch.setattr(csprng, "box_muller", marked)
                sums = ChaCha20Generator.from_seed(9)._summed_normals(n, k, torch.float64)
                assert sums.shape == (n,)
                assert np.count_nonzero(sums) <= 1 and set(sums.tolist()) <= {0.0, 1.0}  # used at most once
                for j in np.flatnonzero(sums).tolist():
                    summands[j].append((output, pair))
        for used in summands.values():
            assert len(used) == k and len({pair for _, pair in used}) == k
        if n % 2 == 0:
            assert sum(len(used) for used in summands.values()) == 2 * pairs  # every normal used


def test_noise_is_scaled_and_shaped_as_asked() -> None:
    rng = ChaCha20Generator.from_seed(10)
    assert rng.gaussian(0, std=1.0).shape == (0,)
    assert rng.gaussian(1, std=1.0).shape == (1,)
    long = rng.gaussian(3 * csprng.GAUSSIAN_PIECE + 5, std=2.5)  # several pieces
    assert float(long.std()) == pytest.approx(2.5, rel=0.02)
    assert torch.equal(ChaCha20Generator.from_seed(11).gaussian(100, std=0.0), torch.zeros(100))
    with pytest.raises(TypeError):
        rng.gaussian(4, std=1.0, dtype=torch.float16)


def test_geometric_draws_have_the_geometric_distribution() -> None:
    p = 0.03
    g = ChaCha20Generator.from_seed(12).geometric((N,), p).numpy()
    assert g.min() == 1 and np.all(g == np.floor(g))
    assert g.mean() == pytest.approx(1 / p, rel=5 * math.sqrt(1 - p) / math.sqrt(N))
    assert np.mean(g == 1) == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / N))
    assert np.mean(g > 50) == pytest.approx((1 - p) ** 50, abs=5 * math.sqrt(0.22 / N))
    assert torch.equal(ChaCha20Generator.from_seed(12).geometric((3,), 1.0), torch.ones(3, dtype=torch.float64))


def test_poisson_batches_from_the_csprng_sample_at_the_rate() -> None:
    rows, rate, steps = 2000, 0.02, 2000
    batches = list(dpsgd.poisson_batches(rows, rate, steps, ChaCha20Generator.from_seed(13)))
    sizes = np.array([len(b) for b in batches])
    hits = np.zeros(rows)
    for b in batches:
        assert len(set(b.tolist())) == b.numel() and (b.numel() == 0 or (int(b.min()) >= 0 and int(b.max()) < rows))
        hits[b.numpy()] += 1
    assert sizes.mean() == pytest.approx(rows * rate, abs=5 * math.sqrt(rows * rate / steps))
    assert sizes.var() == pytest.approx(rows * rate * (1 - rate), rel=0.1)
    # Every row is picked at the rate: the counts per row are Binomial(steps, rate).
    assert hits.mean() == pytest.approx(steps * rate, rel=0.01)
    assert stats.chisquare(hits).pvalue > 1e-3
    assert abs(np.corrcoef(sizes[:-1], sizes[1:])[0, 1]) < 5 / math.sqrt(steps)


def test_the_engine_draws_fresh_noise_every_step_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpsgd, "NOISE_BLOCK_ELEMENTS", 3000)  # 3 steps of 1,230 values per block
    model = torch.nn.Sequential(torch.nn.Linear(40, 30))
    engine = dpsgd.BookKeepingDPSGD(
        model, torch.optim.SGD(model.parameters(), lr=0.0), max_grad_norm=1.0, noise_multiplier=1.0,
        expected_batch_size=16, generator=ChaCha20Generator.from_seed(14),
    )
    grads: list[torch.Tensor] = []

    def capture(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))

    engine.optimizer.register_step_pre_hook(capture)
    for _ in range(7):  # empty batches: each gradient is the step's noise alone
        engine.step(torch.zeros(0, 40), torch.zeros(0, dtype=torch.long))
    engine.close()
    rng = ChaCha20Generator.from_seed(14)  # the same stream, drawn block by block as the engine does
    expected = torch.cat([rng.gaussian(3 * 1230, std=1.0 / 16) for _ in range(3)])
    assert torch.equal(torch.stack(grads), expected[: 7 * 1230].view(7, 1230))
