"""The book-keeping DP-SGD engine computes what Opacus computes, samples like Poisson, and noises right
(from the CSPRNG, and from torch's generator, which the benchmark compares it with)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from torch import nn

from enclave_worker.trusted import dpsgd
from enclave_worker.trusted.csprng import ChaCha20Generator
from enclave_worker.trusted.dataset import Schema
from enclave_worker.trusted.models import ModelSpec, Standardize, build_model


def _reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Opacus per-sample gradients (hooks mode), clipped and summed by hand."""
    ref = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    torch.autograd.backward(nn.functional.cross_entropy(ref(x), y, reduction="sum"))
    per_sample = [p.grad_sample for p in ref.parameters() if p.requires_grad]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in per_sample], dim=1).norm(dim=1)
    scale = (clip / (norms + dpsgd.EPS)).clamp(max=1.0)
    return [torch.einsum("b,b...->...", scale, g) for g in per_sample], norms


MODELS = {
    "logistic": lambda: nn.Sequential(nn.Linear(6, 3)),
    "mlp": lambda: nn.Sequential(
        Standardize(torch.full((6,), 0.5), torch.full((6,), 2.0)),
        nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3),
    ),
    "mlp_no_bias": lambda: nn.Sequential(nn.Linear(6, 16, bias=False), nn.ReLU(), nn.Linear(16, 3)),
    # Stacked activations, Sigmoid, Identity anywhere: still the hand-differentiated dense path.
    "mlp_stacked": lambda: nn.Sequential(
        nn.Identity(), nn.Linear(6, 16), nn.Sigmoid(), nn.Identity(), nn.Tanh(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3),
    ),
    "cnn": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 3),
    ),
    # Stride, dilation, asymmetric kernels and padding, no bias: the im2col path (1·3·3 ≤ 16
    # inputs per output) and the grouped-convolution path (3·2·3 > 16).
    "cnn_strided": lambda: nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2, padding=2, dilation=2, bias=False), nn.ReLU(),
        nn.Conv2d(3, 5, (2, 3), stride=(1, 2), padding=(1, 0)), nn.Tanh(),
        nn.Flatten(), nn.Linear(5 * 4 * 1, 3),
    ),
}


def _image_schema(shape: tuple[int, int, int], classes: int = 3) -> Schema:
    return Schema(task="classification", feature_names=tuple(f"p{i}" for i in range(shape[0] * shape[1] * shape[2])),
                  feature_shape=shape, class_names=tuple(f"c{i}" for i in range(classes)))


def _registry(architecture: str, depth: int) -> nn.Module:
    spec = ModelSpec(architecture=architecture, depth=depth, width=4, norm_groups=2, epochs=1, batch_size=8,
                     learning_rate=0.1, max_grad_norm=1.0)  # type: ignore[arg-type]
    return build_model(spec, _image_schema((3, 8, 8)))


IMAGE_MODELS = {
    # ResNet-8 and -14 from the registry: strided 3x3 convolutions, GroupNorm, residual additions
    # with the parameter-free subsampling shortcut, global average pooling.
    "resnet8": lambda: _registry("resnet", 8),
    "resnet14": lambda: _registry("resnet", 14),
    # VGG-6 and -9: GroupNorm after every convolution, max-pools, a dense head; the last stage's
    # convolutions (2x2 maps, 144 inputs per output) take the ghost-norm path.
    "vgg6": lambda: _registry("vgg", 6),
    "vgg9": lambda: _registry("vgg", 9),
    # GroupNorm on its own, with one group and with one channel per group, after a strided conv;
    # a ghost-normed convolution with bias, stride and padding on a 2x2 map.
    "groupnorm": lambda: nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.GroupNorm(1, 4), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
        nn.GroupNorm(6, 6), nn.Tanh(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.GroupNorm(2, 8),
        nn.Conv2d(8, 16, 3, padding=1), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 3),
    ),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("clip", [0.05, 1.0, 100.0])
def test_clipped_sums_and_norms_match_opacus(name: str, clip: float) -> None:
    torch.manual_seed(0)
    model = MODELS[name]()
    x = torch.randn(23, 1, 6, 6) if name.startswith("cnn") else torch.randn(23, 6)
    y = torch.randint(0, 3, (23,))
    expected, expected_norms = _reference(model, x, y, clip)
    engine = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=clip, noise_multiplier=0.0, expected_batch_size=23)
    got, norms = engine.clipped_sum(x, y)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-5)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    # Every per-sample contribution is clipped: the summed gradient's norm is at most batch * C.
    assert torch.cat([g.flatten() for g in got]).norm() <= 23 * clip * (1 + 1e-4)


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
@pytest.mark.parametrize("clip", [0.05, 100.0])
def test_image_networks_match_opacus(name: str, clip: float) -> None:
    torch.manual_seed(1)
    model = IMAGE_MODELS[name]()
    x, y = torch.randn(19, 3, 8, 8), torch.randint(0, 3, (19,))
    expected, expected_norms = _reference(model, x, y, clip)
    got, norms = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=clip, noise_multiplier=0.0, expected_batch_size=19).clipped_sum(x, y)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-5)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet8", "groupnorm"])
def test_per_sample_gradients_not_held_give_the_same_clipped_sums(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # Every convolution's per-sample gradients too large to hold: norms chunk by chunk, clipped sums by weight-gradient convolutions.
    monkeypatch.setattr(dpsgd, "PER_SAMPLE_HOLD_BYTES", 0)
    monkeypatch.setattr(dpsgd, "HOLD_POSITIONS", 10**9)
    monkeypatch.setattr(dpsgd, "CONV_CHUNK_ELEMENTS", 5 * 432)  # several chunks per layer
    torch.manual_seed(8)
    model = IMAGE_MODELS[name]()
    x, y = torch.randn(17, 3, 8, 8), torch.randint(0, 3, (17,))
    expected, expected_norms = _reference(model, x, y, 0.2)
    got, norms = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=0.2, noise_multiplier=0.0, expected_batch_size=17).clipped_sum(x, y)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-5)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_large_per_sample_gradients_are_held_only_on_large_maps() -> None:
    def g(channels: int, side: int) -> torch.Tensor:
        return torch.zeros(256, channels, side, side)

    assert dpsgd._hold_per_sample(nn.Conv2d(16, 16, 3), g(16, 32))  # 2.4 MB: small
    assert dpsgd._hold_per_sample(nn.Conv2d(32, 32, 3), g(32, 16))  # 9.4 MB: small
    assert not dpsgd._hold_per_sample(nn.Conv2d(64, 64, 3), g(64, 8))  # 38 MB on an 8x8 map
    assert dpsgd._hold_per_sample(nn.Conv2d(64, 64, 3), g(64, 32))  # 38 MB on a 32x32 map


def test_each_convolution_takes_the_cheaper_norm() -> None:
    g = torch.zeros(2, 16, 32, 32)
    assert not dpsgd._ghost_cheaper(nn.Conv2d(16, 16, 3), g)  # 1024 positions: per-sample gradients
    assert dpsgd._ghost_cheaper(nn.Conv2d(256, 256, 3), torch.zeros(2, 256, 8, 8))  # 64 positions, 2304 inputs
    vgg = IMAGE_MODELS["vgg9"]()
    ghosts = []
    for module in vgg.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(lambda m, _i, out: ghosts.append(dpsgd._ghost_cheaper(m, out)))
    vgg(torch.randn(2, 3, 8, 8))
    assert ghosts == [False, False, False, False, True, True]  # the 2x2 maps of the last stage


def test_group_norm_statistics_are_recomputed_without_an_autograd_node() -> None:
    torch.manual_seed(4)
    norm, a = nn.GroupNorm(3, 6), torch.randn(5, 6, 4, 4)
    saved = dpsgd._group_norm_stats(norm, a, norm(a))
    with torch.no_grad():
        output = norm(a)
    assert output.grad_fn is None
    recomputed = dpsgd._group_norm_stats(norm, a, output)
    for s, r in zip(saved, recomputed, strict=True):
        assert s.shape == (5, 3)
        torch.testing.assert_close(s, r)


def test_residual_networks_are_padded_and_the_padding_adds_nothing() -> None:
    torch.manual_seed(6)
    model = IMAGE_MODELS["resnet8"]()
    x, y = torch.randn(13, 3, 8, 8), torch.randint(0, 3, (13,))
    expected, expected_norms = _reference(model, x, y, 0.5)
    engine = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=0.5, noise_multiplier=0.0, expected_batch_size=16)
    assert engine.pad_multiple == 4
    got, norms = engine.clipped_sum(x, y)
    assert norms.shape == (13,)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-5)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_conv_batches_larger_than_one_chunk_match_opacus(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)
    # Chunks of 16 samples for the 4→8 layer (288 weights each), one chunk for the 1→4 layer.
    monkeypatch.setattr(dpsgd, "CONV_CHUNK_ELEMENTS", 16 * 288)
    batch = 2 * 16 + 7  # three chunks, the last one partial
    model = MODELS["cnn"]()
    x, y = torch.randn(batch, 1, 6, 6), torch.randint(0, 3, (batch,))
    expected, expected_norms = _reference(model, x, y, 0.5)
    engine = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=0.5, noise_multiplier=0.0, expected_batch_size=batch)
    got, norms = engine.clipped_sum(x, y)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-5)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["csprng", "torch"])
def test_step_adds_gaussian_noise_of_the_calibrated_scale_and_divides_by_the_expected_batch(kind: str) -> None:
    torch.manual_seed(1)
    layer = nn.Linear(50, 40)
    model = nn.Sequential(layer)
    x, y = torch.randn(8, 50), torch.randint(0, 40, (8,))
    sigma, clip, expected_batch = 2.0, 0.5, 16.0
    twin = copy.deepcopy(model)  # before any engine hooks the model
    generator = ChaCha20Generator.from_seed(3) if kind == "csprng" else torch.Generator().manual_seed(3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    engine = dpsgd.BookKeepingDPSGD(model, optimizer, max_grad_norm=clip, noise_multiplier=sigma,
                                    expected_batch_size=expected_batch, generator=generator)
    clean, _ = dpsgd.BookKeepingDPSGD(twin, torch.optim.SGD(twin.parameters(), lr=0.0), max_grad_norm=clip,
                                      noise_multiplier=0.0, expected_batch_size=expected_batch).clipped_sum(x, y)
    captured: list[torch.Tensor] = []

    def capture(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        assert layer.weight.grad is not None
        captured.append(layer.weight.grad.detach().clone())

    optimizer.register_step_pre_hook(capture)
    for _ in range(3):
        engine.step(x, y)
    engine.close()
    for grad in captured:
        noise = grad * expected_batch - clean[0]
        assert abs(float(noise.mean())) < 0.1
        assert float(noise.std()) == pytest.approx(sigma * clip, rel=0.05)
    assert len(captured) == 3 and not torch.equal(captured[0], captured[1])  # fresh noise every step


def test_a_float64_model_gets_float64_gradients() -> None:
    torch.manual_seed(4)
    model = MODELS["mlp"]().double()
    before = [p.detach().clone() for p in model.parameters()]
    engine = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=8)
    engine.step(torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,)))
    assert all(p.dtype == torch.float64 and not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with pytest.raises(dpsgd.UnsupportedLayer, match="one dtype"):
        mixed = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2).double())
        dpsgd.BookKeepingDPSGD(mixed, torch.optim.SGD(mixed.parameters(), lr=1), max_grad_norm=1, noise_multiplier=1, expected_batch_size=1)


def test_an_empty_batch_is_a_noise_only_step() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    engine = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=1.0),
        max_grad_norm=1.0, noise_multiplier=1.0, expected_batch_size=4)
    engine.step(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("kind", ["csprng", "torch"])
@pytest.mark.parametrize("squeeze", [False, True])
def test_poisson_batches_drawn_together_are_independent_poisson_samples(monkeypatch: pytest.MonkeyPatch, squeeze: bool, kind: str) -> None:
    if squeeze:
        # Few gaps per batch (most batches continue drawing) and few batches per draw.
        monkeypatch.setattr(dpsgd, "_gap_chunk", lambda expected: 7)
        monkeypatch.setattr(dpsgd, "POISSON_DRAW_ELEMENTS", 50)
    gen = ChaCha20Generator.from_seed(1) if kind == "csprng" else torch.Generator().manual_seed(1)
    rows, rate, steps = 3000, 0.01, 3000
    batches = list(dpsgd.poisson_batches(rows, rate, steps, gen))
    assert len(batches) == steps
    sizes = np.array([b.numel() for b in batches])
    hits = torch.zeros(rows)
    for b in batches:
        assert b.dtype == torch.long and len(set(b.tolist())) == b.numel()
        assert b.numel() == 0 or (int(b.min()) >= 0 and int(b.max()) < rows)
        hits[b] += 1
    assert sizes.mean() == pytest.approx(rows * rate, rel=0.02)
    assert sizes.var() == pytest.approx(rows * rate * (1 - rate), rel=0.1)
    # Consecutive batches are uncorrelated, and no row is favoured.
    assert abs(np.corrcoef(sizes[:-1], sizes[1:])[0, 1]) < 0.06
    assert hits[:300].mean() == pytest.approx(steps * rate, rel=0.1) and hits[-300:].mean() == pytest.approx(steps * rate, rel=0.1)
    assert [b.tolist() for b in dpsgd.poisson_batches(4, 1.0, 2)] == [[0, 1, 2, 3]] * 2
    for bad_rate in (0.0, 1.5):
        with pytest.raises(ValueError):
            next(dpsgd.poisson_batches(10, bad_rate, 1))


def test_unsupported_layers_are_detected() -> None:
    assert dpsgd.supported(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    assert not dpsgd.supported(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)))
    assert not dpsgd.supported(nn.Sequential(nn.Conv2d(1, 2, 3, padding="same")))
    assert not dpsgd.supported(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)))
    # A subclass that computes something else than its weights' layer would get that layer's gradients.
    assert not dpsgd.supported(nn.Sequential(_ScaledLinear(6, 4), nn.ReLU(), nn.Linear(4, 3)))
    assert dpsgd.supported(nn.Sequential(type("NamedLinear", (nn.Linear,), {})(6, 4)))
    assert dpsgd.supported(nn.Sequential(nn.Embedding(4, 3)))  # one index per example: tests/enclave_worker/test_embeddings.py
    with pytest.raises(dpsgd.UnsupportedLayer, match="padding index"):
        dpsgd.BookKeepingDPSGD(nn.Sequential(nn.Embedding(4, 3, padding_idx=0)), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1),
            max_grad_norm=1, noise_multiplier=1, expected_batch_size=1)


class _ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(2.0 * x)


def _engine(model: nn.Module, clip: float = 1.0) -> dpsgd.BookKeepingDPSGD:
    return dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=clip, noise_multiplier=0.0, expected_batch_size=23)


def test_only_plain_dense_chains_are_differentiated_by_hand() -> None:
    for name in ("logistic", "mlp", "mlp_no_bias", "mlp_stacked"):
        assert _engine(MODELS[name]())._dense is not None, name
    assert _engine(MODELS["cnn"]())._dense is None
    # A dropout draws a mask; a module after the logits changes the loss; a hook must run.
    assert _engine(nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5), nn.Linear(4, 3)))._dense is None
    assert _engine(nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3), nn.Softmax(dim=1)))._dense is None
    hooked = MODELS["mlp"]()
    hooked[1].register_forward_hook(lambda *_: None)
    assert _engine(hooked)._dense is None


def test_models_outside_the_dense_path_still_match_opacus() -> None:
    torch.manual_seed(5)
    built = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3), nn.LogSoftmax(dim=1))
    x, y = torch.randn(23, 6), torch.randint(0, 3, (23,))
    expected, expected_norms = _reference(built, x, y, 0.3)
    got, norms = _engine(built, 0.3).clipped_sum(x, y)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-5)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_convolutional_batches_are_padded_to_few_shapes_and_the_padding_adds_nothing() -> None:
    torch.manual_seed(3)
    model = MODELS["cnn"]()
    x, y = torch.randn(61, 1, 6, 6), torch.randint(0, 3, (61,))
    expected, expected_norms = _reference(model, x, y, 0.5)
    seen: list[int] = []
    model[0].register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[0]))
    engine = dpsgd.BookKeepingDPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1),
        max_grad_norm=0.5, noise_multiplier=0.0, expected_batch_size=70)
    assert engine.pad_multiple == 8  # 2^⌊log₂ √70⌋
    got, norms = engine.clipped_sum(x, y)
    assert seen == [64] and norms.shape == (61,)
    torch.testing.assert_close(norms, expected_norms, rtol=1e-4, atol=1e-5)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_only_convolutional_models_of_row_wise_modules_are_padded() -> None:
    assert dpsgd.pad_multiple(MODELS["mlp"](), 225) == 1  # no oneDNN convolution to spare
    assert dpsgd.pad_multiple(MODELS["cnn"](), 225) == 8
    assert dpsgd.pad_multiple(MODELS["cnn"](), 56) == 4
    assert dpsgd.pad_multiple(MODELS["cnn"](), 0.5) == 1
    # A module that mixes rows (batch statistics) would see the padding: no padding then.
    mixing = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, affine=False), nn.Flatten(), nn.Linear(32, 2))
    assert dpsgd.pad_multiple(mixing, 225) == 1
