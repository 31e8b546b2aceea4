"""DP-SGD by per-sample-norm book-keeping: clipped gradients without per-sample gradients for dense layers.

One step on a Poisson-sampled batch:

1. forward through the model, keeping each trainable layer's input ``a`` and output ``z``;
2. the gradients ``g_l`` of the summed loss with respect to the layer outputs ``z_l`` only, so no
   weight-gradient product is formed: ``torch.autograd.grad(sum-loss, [z_1 … z_L])`` in general;
   for a plain dense chain (:class:`_DenseChain`: ``nn.Sequential`` of ``nn.Linear`` layers and
   ReLU/Tanh/Sigmoid, after modules with nothing to train) by hand instead, ``softmax(z_L) −
   onehot(y)`` and then ``g W`` and each activation's own backward kernel, with no autograd graph
   or engine — the same numbers (tests compare both paths with Opacus) for 0.15–0.18 ms less per
   MLP step at batch 256, about a fifth of a non-private step on this machine;
3. per-sample gradient norms, layer by layer: for ``nn.Linear`` on flat inputs
   ``‖g_i‖·‖a_i‖`` (and ``‖g_i‖`` for the bias) — the per-sample gradient ``g_i a_iᵀ`` is never
   formed (Bu et al., "Automatic clipping / book-keeping", ICML 2023; Li et al. ghost clipping,
   ICLR 2022); for ``nn.Conv2d``, whichever is cheaper per layer (:func:`_ghost_cheaper`, Bu et
   al.'s "mixed ghost clipping"): the per-sample gradients from one grouped convolution backward
   (or im2col and a batched product for narrow inputs) — early layers on large maps — or ghost
   norms from two ``T × T`` Gram matrices per sample — wide layers on small maps, whose
   per-sample gradients would be large; for ``nn.GroupNorm`` the per-sample weight and bias
   gradients (``[b, C]``) from one fused kernel and the forward pass's saved statistics. Residual
   additions, pooling and activations have nothing to train: autograd carries the output
   gradients through them. A sample's norm is the norm of its row of these per-parameter norms;
4. clip factors ``c_i = min(1, C / ‖∇_i‖)`` and the clipped sum per layer in one product:
   ``(c ⊙ g)ᵀ a`` for dense layers (``gᵀ (c ⊙ a)`` when ``a`` is the narrower), ``cᵀ G`` over the
   per-sample gradients ``G`` for convolutions and GroupNorm, and for ghost-normed convolutions
   one ordinary weight-gradient convolution of the scaled output gradients ``c ⊙ g``;
5. Gaussian noise ``N(0, σ²C²)`` on every summed gradient, division by the expected batch size
   ``q·n`` (Opacus's convention for Poisson sampling), and the wrapped optimizer's step.

Randomness — the Poisson samples and the noise — comes from a ChaCha20 CSPRNG (:mod:`.csprng`),
the noise hardened against floating-point attacks (each value a sum of four normals, as in Opacus's
``secure_mode``) and drawn many steps at a time (:class:`_NoiseBlocks`). A ``torch.Generator`` is
still accepted, for the benchmark that compares the two.

Convolutional models see Poisson batches padded with zero rows to a multiple of a few rows
(:func:`pad_multiple`); a padded row's clip factor is 0, so it adds nothing. oneDNN builds its
convolution kernels per input shape, and Poisson batch sizes keep producing new shapes: padding
bounds them to a handful (0.05–0.15 of the digits CNN's DP/non-private time ratio on this
machine, see docs/models.md). It needs every module to treat rows independently (:data:`ROW_WISE`), as DP-SGD itself
does; other models are not padded.

It computes exactly what Opacus's DP-SGD computes (tests compare both on the same batches) at
close to the cost of a non-private step. Supported trainable layers: ``nn.Linear`` (2-D inputs),
``nn.Conv2d`` (groups = 1, any stride, padding and dilation), ``nn.GroupNorm`` and ``nn.Embedding``
(one index per example); anything else with trainable parameters is refused. At batch 256 on
32x32 images a DP step of VGG-9 or ResNet-32 costs about 1.3 times a non-private one on this
machine, with the trainer's allocator keeping freed memory (:func:`.runtime.keep_freed_memory`;
``make bench-models``, docs/models.md). The ratios quoted below for single choices were measured
before that, when both steps also page-faulted their temporaries.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from .csprng import ChaCha20Generator
from .models import BasicBlock, CategoricalEmbedding, ClipScale, Square, Standardize
from .tasks import LossFn, ProportionalHazard, TargetScale

Randomness = ChaCha20Generator | torch.Generator
"""Where DP-SGD draws its noise and Poisson samples: the CSPRNG (always, in the enclave), or torch's
Mersenne Twister for benchmarks that compare the two."""

EPS = 1e-6
CONV_CHUNK_ELEMENTS = 128 * 32 * 16 * 9
"""Per-sample conv gradients are formed this many elements at a time (2.25 MiB of float32): 128
samples of the digits CNN's 16→32 layer, the whole batch of its 1→16 layer. It trades time for
memory; measured on that layer at batch 256 (DP/non-private epoch time, working set): 64 samples
→ 1.54, 1.5–1.7; 128 → 1.46, 1.7; 256 → 1.40, 2.0–2.1."""
PER_SAMPLE_HOLD_BYTES = 16 << 20
"""A conv layer whose per-sample gradients of a whole batch take more than this is not held until
the clip factors are known: its norms are taken chunk by chunk and its clipped sum formed by one
weight-gradient convolution of the scaled output gradients. Held, ResNet-32's last stage (256 ×
36,864 values, 38 MiB per layer, 340 MiB for its nine 64→64 layers) made each step's per-sample
gradients 5.6 ms at the stage's first layer and up to 137 ms at its last (fresh memory each step);
not held, 5.6 ms + 2.9 ms for the weight gradient. Its middle stage (9 MiB per layer) is better
held: ResNet-32's DP/non-private step ratio was 1.63 with a limit of 8 MiB, 1.36–1.57 with 16 or
32 MiB (the same layers held), 1.76 with 4 MiB and 1.64–1.77 holding every layer."""
HOLD_POSITIONS = 256
"""Per-sample gradients of a layer with at least this many output positions (16x16) are held
whatever their size: a weight-gradient convolution costs ``positions`` multiply-adds per held value
(VGG-9's 64→64 layer on 32x32 maps: 38 MiB held against about 10 G multiply-adds). VGG-9's
DP/non-private step ratio measured 1.29–1.43 holding those layers, 1.63–2.03 not."""
IM2COL_MAX_WIDTH = 32
"""Convolutions with at most this many inputs per output (``C_in · kh · kw``) use im2col + bmm
(a first layer on colour images, 3·3·3 = 27: 3.5 ms against 9.6 ms grouped, ResNet stem at batch 256)."""


ROW_WISE: tuple[type[nn.Module], ...] = (
    nn.Sequential, nn.Linear, nn.Conv2d, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.MaxPool2d, nn.AvgPool2d,
    nn.Flatten, nn.Dropout, nn.Identity, nn.GroupNorm, nn.AdaptiveAvgPool2d, Standardize, ClipScale, BasicBlock, Square,
    TargetScale, ProportionalHazard, CategoricalEmbedding,
)
"""Modules whose output row ``i`` depends on input row ``i`` only: zero rows padded onto a batch
change nothing for the others."""


def pad_multiple(model: nn.Module, expected_batch_size: float) -> int:
    """Rows a batch is padded to a multiple of: ``2^⌊log₂ √(expected batch)⌋`` for a convolutional
    model made of :data:`ROW_WISE` modules, else 1 (no padding).

    A Poisson batch size has standard deviation about ``√(expected)``, so this keeps about six
    distinct shapes at any batch size while padding between ``√(expected) / 4`` and
    ``√(expected) / 2`` rows on average (3.5 rows, 1.6 %, at an expected 225 rows)."""
    modules = list(model.modules())
    if not any(isinstance(m, nn.Conv2d) for m in modules) or not all(isinstance(m, ROW_WISE) for m in modules):
        return 1
    return 1 << max(0, int(math.log2(math.sqrt(max(expected_batch_size, 1.0)))))


class UnsupportedLayer(ValueError):
    """The model has a trainable layer the book-keeping engine cannot clip per sample."""


Trainable = nn.Linear | nn.Conv2d | nn.GroupNorm | nn.Embedding
"""The layers whose parameters the engine clips per sample."""


@dataclass
class _Layer:
    module: Trainable
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None
    stats: tuple[torch.Tensor, torch.Tensor] | None = None
    """GroupNorm only: the forward pass's per-(sample, group) mean and 1/std."""


POISSON_DRAW_ELEMENTS = 1 << 20
"""Geometric gaps drawn at once by :func:`poisson_batches` (8 MiB of float64): the batches of many
steps come from one draw, so a step's sampling is not a dozen small operations of its own."""


def _gap_chunk(expected: float) -> int:
    """Gaps drawn per batch: the expected batch plus 8 standard deviations (rarely not enough)."""
    return int(expected + 8 * expected**0.5 + 16)


def poisson_batches(rows: int, rate: float, steps: int, generator: Randomness | None = None) -> Iterator[torch.Tensor]:
    """Indices of ``steps`` independent Poisson-sampled batches: in each, every one of ``rows``
    rows independently with probability ``rate``.

    Draws the gaps between selected rows from a geometric distribution (exactly the gaps of
    independent Bernoulli trials), so the cost follows the batch size, not the table size; the
    gaps of many batches are drawn and summed in one go (:data:`POISSON_DRAW_ELEMENTS`). Without a
    ``generator`` the gaps come from a CSPRNG with a fresh key.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"sample rate must be in (0, 1], got {rate}")
    if rate == 1:
        for _ in range(steps):
            yield torch.arange(rows)
        return
    rng = generator if generator is not None else ChaCha20Generator.from_entropy()
    chunk = _gap_chunk(rate * rows)
    group = max(1, POISSON_DRAW_ELEMENTS // chunk)
    for start in range(0, steps, group):
        count = min(group, steps - start)
        positions = _geometric(rng, (count, chunk), rate).cumsum_(1).sub_(1.0)
        inside = positions < rows
        sizes, last = inside.sum(1).tolist(), positions[:, -1].tolist()
        picked = positions[inside]
        # Only the picked indices outlive the draw: the gaps (8 MiB at 2^20) and their mask are freed
        # now, not held while this group's batches train and into the next draw.
        del positions, inside
        batches = torch.split(picked.long(), sizes)
        del picked
        for batch, end in zip(batches, last, strict=True):
            # The chunk ran out before the table did (past 8 standard deviations): keep drawing.
            yield batch if end >= rows - 1 else torch.cat([batch, _more_positions(rows, rate, end, chunk, rng)])


def _geometric(rng: Randomness, shape: tuple[int, ...], rate: float) -> torch.Tensor:
    """Geometric draws (≥ 1) of success probability ``rate``, float64."""
    if isinstance(rng, torch.Generator):
        return torch.empty(shape, dtype=torch.float64).geometric_(rate, generator=rng)
    return rng.geometric(shape, rate)


def _more_positions(rows: int, rate: float, last: float, chunk: int, rng: Randomness) -> torch.Tensor:
    picked: list[torch.Tensor] = []
    while last < rows - 1:
        positions = _geometric(rng, (chunk,), rate).cumsum_(0).add_(last)
        picked.append(positions[positions < rows])
        last = float(positions[-1])
    return torch.cat(picked).long()


NOISE_BLOCK_ELEMENTS = 1 << 18
"""Noise values drawn from the CSPRNG at once: whole steps' worth, at least this many (23 steps of
the hospital MLP, 7 of the digits CNN; 1 MiB of float32). Drawn between training steps, noise costs
more than drawn alone, and less so in larger draws; measured on the MLP, per step: 167 µs drawn one
step at a time, 143 µs 12 steps at a time, 113–121 µs 23–46 steps at a time, against 102–108 µs
drawn alone."""


class _NoiseBlocks:
    """Per-step noise ``N(0, std²)`` for a list of parameters, from the CSPRNG, drawn
    :data:`NOISE_BLOCK_ELEMENTS` values at a time.

    Each step gets one view per parameter, shaped like it, into a block that nothing else uses;
    the views of a whole block are formed at once (one ``unbind`` per parameter per block, not a
    split and a reshape per parameter per step)."""

    def __init__(self, rng: ChaCha20Generator, params: list[torch.Tensor], *, std: float, dtype: torch.dtype) -> None:
        self._rng = rng
        self._shapes = [p.shape for p in params]
        self._sizes = [p.numel() for p in params]
        self._size = sum(self._sizes)
        self._std = std
        self._dtype = dtype
        self._steps = math.ceil(NOISE_BLOCK_ELEMENTS / self._size)
        self._pending: list[list[torch.Tensor]] = []

    def draw(self) -> list[torch.Tensor]:
        """The next step's noise, one tensor per parameter."""
        if not self._pending:
            block = self._rng.gaussian(self._steps * self._size, std=self._std, dtype=self._dtype).view(self._steps, self._size)
            per_param = [part.reshape(self._steps, *shape).unbind(0)
                         for part, shape in zip(torch.split(block, self._sizes, dim=1), self._shapes, strict=True)]
            self._pending = [list(step) for step in zip(*per_param, strict=True)][::-1]
        return self._pending.pop()


def supported(model: nn.Module) -> bool:
    """Whether every trainable parameter of ``model`` sits in a layer this engine handles."""
    try:
        _trainable_layers(model)
    except UnsupportedLayer:
        return False
    return True


def _trainable_layers(model: nn.Module) -> list[Trainable]:
    layers: list[Trainable] = []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if isinstance(module, Trainable) and type(module).forward not in (
            nn.Linear.forward, nn.Conv2d.forward, nn.GroupNorm.forward, nn.Embedding.forward,
        ):
            raise UnsupportedLayer(f"{type(module).__name__} overrides forward: its gradients are not those of its weights' layer")
        if isinstance(module, nn.Embedding) and (module.max_norm is not None or module.sparse or module.padding_idx is not None):
            raise UnsupportedLayer("nn.Embedding with max_norm, sparse gradients or a padding index is not supported")
        if isinstance(module, nn.Linear | nn.GroupNorm | nn.Embedding) or (
            isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)
        ):
            layers.append(module)
        else:
            raise UnsupportedLayer(f"{type(module).__name__} has trainable parameters the book-keeping engine cannot clip")
    return layers


def _im2col(module: nn.Conv2d, a: torch.Tensor, out_hw: torch.Size) -> torch.Tensor:
    """Columns ``[b, C_in · kh · kw, H_out · W_out]`` of a zero-padded input, ordered like the
    conv weight's ``[C_in, kh, kw]``: one strided view and one copy (``F.unfold`` is slower)."""
    ph, pw = cast(tuple[int, ...], module.padding)  # numbers, never "same"/"valid": _trainable_layers admits no other
    padded = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a
    kh, kw = module.kernel_size
    (sh, sw), (dh, dw) = module.stride, module.dilation
    h_out, w_out = out_hw
    s_b, s_c, s_h, s_w = padded.stride()
    view = padded.as_strided(
        (a.shape[0], a.shape[1], kh, kw, h_out, w_out),
        (s_b, s_c, dh * s_h, dw * s_w, sh * s_h, sw * s_w),
    )
    return view.reshape(a.shape[0], a.shape[1] * kh * kw, h_out * w_out)


def _group_norm_stats(module: nn.GroupNorm, a: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and 1/std per (sample, group) of a GroupNorm's forward pass, ``[b, groups]`` each.

    Taken from the autograd node that saved them for the backward (``native_group_norm``'s second
    and third results), so the statistics are not computed twice; recomputed when there is no
    such node (a forward without autograd)."""
    node = output.grad_fn
    mean, rstd = getattr(node, "_saved_result1", None), getattr(node, "_saved_result2", None)
    if isinstance(mean, torch.Tensor) and isinstance(rstd, torch.Tensor):
        return mean, rstd
    b, c = a.shape[0], a.shape[1]
    _, mean, rstd = torch.ops.aten.native_group_norm(a, None, None, b, c, a[0, 0].numel(), module.num_groups, module.eps)
    return mean, rstd


def _group_norm_per_sample(
    module: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gradients ``[b, C]`` of a GroupNorm's weight (``Σ_positions g · x̂``) and bias
    (``Σ_positions g``), ``x̂`` the normalised input.

    One fused kernel: the batch seen as a single sample of ``b · C`` channels in ``b · groups``
    groups, whose per-channel weight and bias gradients are exactly the per-sample ones (measured
    at ``[256, 16, 32, 32]``: 0.47 ms, against 2.3 ms to form ``x̂`` and reduce ``g · x̂``)."""
    b, c = a.shape[0], a.shape[1]
    positions = a[0, 0].numel()
    flat_g = g.reshape(1, b * c, positions)
    flat_a = a.reshape(1, b * c, positions)
    _, weight, bias = torch.ops.aten.native_group_norm_backward(
        flat_g, flat_a, mean.reshape(1, -1), rstd.reshape(1, -1), a.new_ones(b * c),
        1, b * c, positions, b * module.num_groups, [False, True, True],
    )
    return weight.view(b, c), bias.view(b, c)


def _ghost_cheaper(module: nn.Conv2d, g: torch.Tensor) -> bool:
    """Whether a conv layer's per-sample gradient norms are cheaper as ghost norms than from
    per-sample gradients: ``T² (K + C_out)`` against ``T K C_out`` multiply-adds per sample (``T``
    output positions, ``K = C_in kh kw``). True for wide layers on small maps (a VGG's last stage:
    ``T`` = 64, ``K`` = 2304, ``C_out`` = 256, where the per-sample gradients would also take
    2.4 MB per sample to hold), false for the early layers of an image network (``T`` = 1024)."""
    positions = g.shape[2] * g.shape[3]
    k = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
    return positions * (k + module.out_channels) < k * module.out_channels


def _hold_per_sample(module: nn.Conv2d, g: torch.Tensor) -> bool:
    """Whether a conv layer's per-sample gradients are held until the clip factors are known (their
    clipped sum then one GEMV) rather than reduced to norms chunk by chunk (the clipped sum then a
    weight-gradient convolution): held when they are small (:data:`PER_SAMPLE_HOLD_BYTES`) or the
    map is large (:data:`HOLD_POSITIONS`), where the convolution would cost ``T`` times the GEMV."""
    positions = g.shape[2] * g.shape[3]
    return 4 * g.shape[0] * module.weight.numel() <= PER_SAMPLE_HOLD_BYTES or positions >= HOLD_POSITIONS


def _conv_ghost_norms(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample squared-then-rooted norms of a conv layer's weight gradient without forming it
    ("ghost clipping", Li et al. 2022; Bu et al. 2023): ``‖Σ_t g_t a_tᵀ‖² = Σ_{s,t} (a_s·a_t)(g_s·g_t)``
    over output positions, from the two ``T × T`` Gram matrices of each sample, in chunks of
    :data:`CONV_CHUNK_ELEMENTS` im2col elements."""
    k = a.shape[1] * module.kernel_size[0] * module.kernel_size[1]
    positions = g.shape[2] * g.shape[3]
    chunk = max(1, CONV_CHUNK_ELEMENTS // (k * positions))
    norms = []
    for a_part, g_part in zip(torch.split(a, chunk), torch.split(g, chunk), strict=True):
        columns = _im2col(module, a_part, g_part.shape[2:])  # [b, K, T]
        flat_g = g_part.flatten(2)  # [b, C_out, T]
        gram_a = torch.bmm(columns.transpose(1, 2), columns)
        gram_g = torch.bmm(flat_g.transpose(1, 2), flat_g)
        norms.append((gram_a * gram_g).sum(dim=(1, 2)).clamp_(min=0.0).sqrt_())
    return torch.cat(norms)


def _conv_weight_grad(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``Σ_i`` of the per-sample weight gradients of a conv layer for output gradients ``g``: the
    ordinary weight-gradient convolution (oneDNN)."""
    _, weight, _ = torch.ops.aten.convolution_backward(
        g, a, module.weight, None, list(module.stride), list(cast(tuple[int, ...], module.padding)),
        list(module.dilation), False, [0, 0], 1, [False, True, False],
    )
    return cast(torch.Tensor, weight)


_ACTIVATION_BACKWARD: dict[type[nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    nn.ReLU: lambda grad, output: torch.ops.aten.threshold_backward(grad, output, 0.0),
    nn.Tanh: torch.ops.aten.tanh_backward,
    nn.Sigmoid: torch.ops.aten.sigmoid_backward,
}
"""Element-wise activations the dense path differentiates by hand, each by the backward autograd
itself uses (from the activation's output)."""


@dataclass(frozen=True)
class _DenseChain:
    """A ``nn.Sequential`` the engine differentiates without autograd: modules with nothing to
    train first (run as they are), then only ``nn.Linear`` layers and :data:`_ACTIVATION_BACKWARD`
    activations (``nn.Identity`` dropped), a linear layer last."""

    prefix: tuple[nn.Module, ...]
    chain: tuple[nn.Module, ...]

    @classmethod
    def of(cls, model: nn.Module) -> _DenseChain | None:
        if type(model) is not nn.Sequential:
            return None
        modules = list(model)
        first = next((i for i, m in enumerate(modules) if any(p.requires_grad for p in m.parameters())), None)
        if first is None:
            return None
        chain = tuple(m for m in modules[first:] if type(m) is not nn.Identity)
        if type(chain[-1]) is not nn.Linear or any(type(m) is not nn.Linear and type(m) not in _ACTIVATION_BACKWARD for m in chain):
            return None
        if any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in chain):
            return None  # the dense path calls F.linear itself: a module's own hooks would not run
        return cls(tuple(modules[:first]), chain)


def _conv_per_sample_chunks(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> Iterator[torch.Tensor]:
    """Per-sample weight gradients, ``[b, C_out · C_in · kh · kw]`` per chunk of at most
    ``CONV_CHUNK_ELEMENTS`` elements, one chunk at a time.

    Narrow inputs (``C_in · kh · kw ≤ IM2COL_MAX_WIDTH``, e.g. a first layer on grey images) go
    through an explicit im2col view and one batched matrix product; wider ones through one
    grouped convolution backward per chunk (oneDNN), which is faster there (measured on this
    machine at batch 256: 0.19 vs 0.51 ms for 1→16 channels, 1.18 vs 1.89 ms for 16→32).
    """
    c_in, c_out = a.shape[1], g.shape[1]
    kh, kw = module.kernel_size
    chunk = max(1, CONV_CHUNK_ELEMENTS // (c_out * c_in * kh * kw))
    for a_part, g_part in zip(torch.split(a, chunk), torch.split(g, chunk), strict=True):
        batch = a_part.shape[0]
        if c_in * kh * kw <= IM2COL_MAX_WIDTH:
            columns = _im2col(module, a_part, g_part.shape[2:])
            yield torch.bmm(g_part.flatten(2), columns.transpose(1, 2)).flatten(1)
        else:
            # aten directly, with a real (uninitialised) weight: torch.nn.grad.conv2d_weight
            # passes an expanded stride-0 one, and oneDNN is 10-15 % slower with it here.
            _, grouped, _ = torch.ops.aten.convolution_backward(
                g_part.reshape(1, batch * c_out, *g.shape[2:]),
                a_part.reshape(1, batch * c_in, *a.shape[2:]),
                a_part.new_empty(batch * c_out, c_in, kh, kw),
                None, list(module.stride), list(module.padding), list(module.dilation),
                False, [0, 0], batch, [False, True, False],
            )
            yield grouped.view(batch, -1)


class BookKeepingDPSGD:
    """Clipping, noise and the optimizer step of DP-SGD for one model.

    Example:
        >>> engine = BookKeepingDPSGD(model, optimizer, max_grad_norm=1.0, noise_multiplier=1.1,
        ...                           expected_batch_size=64)  # doctest: +SKIP
        >>> engine.step(features, labels)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        max_grad_norm: float,
        noise_multiplier: float,
        expected_batch_size: float,
        generator: Randomness | None = None,
        loss: LossFn | None = None,
    ) -> None:
        if max_grad_norm <= 0 or noise_multiplier < 0 or expected_batch_size <= 0:
            raise ValueError("max_grad_norm and expected_batch_size must be positive, noise_multiplier non-negative")
        self.model = model
        self.optimizer = optimizer
        self.max_grad_norm = float(max_grad_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.expected_batch_size = float(expected_batch_size)
        self.generator: Randomness = generator if generator is not None else ChaCha20Generator.from_entropy()
        self.loss = loss
        self._layers = [_Layer(m) for m in _trainable_layers(model)]
        self._by_module = {id(layer.module): layer for layer in self._layers}
        self._dense = _DenseChain.of(model)
        self._hooks = [] if self._dense is not None else [layer.module.register_forward_hook(self._remember) for layer in self._layers]
        self._params = self._parameters()
        self._size = sum(p.numel() for p in self._params)
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1:
            raise UnsupportedLayer(f"trainable parameters of one dtype are needed, got {sorted(map(str, dtypes))}")
        self._dtype = dtypes.pop()
        if self._dtype not in (torch.float32, torch.float64):
            raise UnsupportedLayer(f"float32 or float64 parameters are needed, got {self._dtype}")
        self.pad_multiple = pad_multiple(model, expected_batch_size)
        self._std = self.noise_multiplier * self.max_grad_norm / self.expected_batch_size
        self._noise = (
            _NoiseBlocks(self.generator, self._params, std=self._std, dtype=self._dtype)
            if isinstance(self.generator, ChaCha20Generator) and self._std > 0
            else None
        )

    def _remember(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        layer = self._by_module[id(module)]
        layer.input = inputs[0].detach()
        layer.output = output
        if isinstance(module, nn.GroupNorm):
            layer.stats = _group_norm_stats(module, layer.input, output)

    def close(self) -> None:
        """Remove the forward hooks from the model."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def clipped_sum(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-layer sums of per-sample gradients clipped to ``max_grad_norm`` (no noise).

        Returns:
            ``(grads, norms)``: one summed gradient per trainable parameter, in ``model.parameters()``
            order of the layers, and the per-sample gradient norms before clipping.
        """
        grads = [torch.zeros_like(p) for p in self._params]
        return grads, self._accumulate(features, labels, grads, 1.0)

    def _accumulate(self, features: torch.Tensor, labels: torch.Tensor, into: list[torch.Tensor], factor: float) -> torch.Tensor:
        """Add ``factor`` times the clipped sum to the tensors ``into`` (one per parameter, as
        :meth:`_parameters`); return the per-sample gradient norms before clipping."""
        rows = features.shape[0]
        padding = -rows % self.pad_multiple
        if padding:
            features = torch.cat([features, features.new_zeros(padding, *features.shape[1:])])
            labels = torch.cat([labels, labels.new_zeros(padding, *labels.shape[1:])])
        if self._dense is not None:
            with torch.no_grad():
                output_grads: Sequence[torch.Tensor] = self._dense_output_grads(self._dense, features, labels)
        else:
            logits = self.model(features)
            loss = F.cross_entropy(logits, labels, reduction="sum") if self.loss is None else self.loss(logits, labels)
            outputs = [layer.output for layer in self._layers if layer.output is not None]
            assert len(outputs) == len(self._layers), "every trainable layer must run in the forward pass"
            output_grads = torch.autograd.grad(loss, outputs)
        # One column per parameter of each sample's gradient norm; the norm of a row is the
        # sample's whole gradient norm (one reduction instead of a running sum of squares).
        columns: list[torch.Tensor] = []
        prepared: list[tuple[_Layer, torch.Tensor | list[torch.Tensor], torch.Tensor | None]] = []
        for layer, g in zip(self._layers, output_grads, strict=True):
            a = layer.input
            assert a is not None
            if isinstance(layer.module, nn.Linear):
                if a.dim() != 2:
                    raise UnsupportedLayer("the book-keeping engine handles nn.Linear on flat (2-D) inputs only")
                g_norm = torch.linalg.vector_norm(g, dim=1)
                columns.append(g_norm * torch.linalg.vector_norm(a, dim=1))  # ‖g_i a_iᵀ‖ = ‖g_i‖·‖a_i‖
                if layer.module.bias is not None:
                    columns.append(g_norm)
                prepared.append((layer, g, None))
            elif isinstance(layer.module, nn.Embedding):
                # One row of the table per example: its per-sample gradient is g_i in that row.
                if a.dim() != 1:
                    raise UnsupportedLayer("the book-keeping engine handles nn.Embedding of one index per example only")
                columns.append(torch.linalg.vector_norm(g, dim=1))
                prepared.append((layer, g, None))
            elif isinstance(layer.module, nn.GroupNorm):
                assert layer.stats is not None
                weight_ps, bias_ps = _group_norm_per_sample(layer.module, a, g, *layer.stats)
                columns += [torch.linalg.vector_norm(weight_ps, dim=1), torch.linalg.vector_norm(bias_ps, dim=1)]
                prepared.append((layer, [weight_ps], bias_ps))
            else:
                bias = g.sum(dim=(2, 3)) if layer.module.bias is not None else None
                if _ghost_cheaper(layer.module, g):
                    columns.append(_conv_ghost_norms(layer.module, a, g))
                    prepared.append((layer, g, bias))
                elif not _hold_per_sample(layer.module, g):
                    # Norms chunk by chunk, nothing held: the clipped sum is a weight-gradient convolution, as for ghost norms.
                    norms_of = [torch.linalg.vector_norm(part, dim=1) for part in _conv_per_sample_chunks(layer.module, a, g)]
                    columns.append(torch.cat(norms_of))
                    prepared.append((layer, g, bias))
                else:
                    per_sample = self._conv_per_sample(layer.module, a, g)
                    part_norms = [torch.linalg.vector_norm(part, dim=1) for part in per_sample]
                    columns.append(part_norms[0] if len(part_norms) == 1 else torch.cat(part_norms))
                    prepared.append((layer, per_sample, bias))
                if bias is not None:
                    columns.append(torch.linalg.vector_norm(bias, dim=1))
        norms: torch.Tensor = torch.linalg.vector_norm(torch.stack(columns, dim=1), dim=1)
        scale = (self.max_grad_norm / (norms + EPS)).clamp_(max=1.0)
        if padding:
            scale[rows:] = 0.0
            norms = norms[:rows]
        row_scale = scale.unsqueeze(1)
        # Plain arithmetic on detached tensors; the noise views (from unbind) may be updated in place only here.
        with torch.no_grad():
            targets = iter(into)
            for layer, g_or_ps, bias in prepared:
                module = layer.module
                weight = next(targets)
                if isinstance(module, nn.Linear):
                    a = layer.input
                    assert isinstance(g_or_ps, torch.Tensor) and a is not None
                    # Σ_i c_i g_i a_iᵀ: the clip factors scale the narrower of the two.
                    if a.shape[1] < g_or_ps.shape[1]:
                        weight.addmm_(g_or_ps.t(), a * row_scale, alpha=factor)
                    else:
                        weight.addmm_((g_or_ps * row_scale).t(), a, alpha=factor)
                    if module.bias is not None:
                        next(targets).addmv_(g_or_ps.t(), scale, alpha=factor)
                elif isinstance(module, nn.Embedding):
                    assert isinstance(g_or_ps, torch.Tensor) and layer.input is not None
                    weight.index_add_(0, layer.input, g_or_ps * row_scale, alpha=factor)
                elif isinstance(module, nn.GroupNorm):
                    assert isinstance(g_or_ps, list) and bias is not None
                    weight.addmv_(g_or_ps[0].t(), scale, alpha=factor)
                    next(targets).addmv_(bias.t(), scale, alpha=factor)
                elif isinstance(g_or_ps, torch.Tensor):
                    # Ghost norms: the clipped sum is one weight-gradient convolution of the scaled output gradients.
                    assert isinstance(module, nn.Conv2d) and layer.input is not None
                    weight.add_(_conv_weight_grad(module, layer.input, g_or_ps * scale.view(-1, 1, 1, 1)), alpha=factor)
                    if bias is not None:
                        next(targets).addmv_(bias.t(), scale, alpha=factor)
                else:
                    # Per-sample gradients are at hand for the norms: the clipped sum is one GEMV per chunk.
                    flat = weight.view(-1)
                    for part, part_scale in zip(g_or_ps, torch.split(scale, [len(part) for part in g_or_ps]), strict=True):
                        flat.addmv_(part.t(), part_scale, alpha=factor)
                    if bias is not None:
                        next(targets).addmv_(bias.t(), scale, alpha=factor)
                layer.input = layer.output = layer.stats = None
        return norms

    def _dense_output_grads(self, dense: _DenseChain, features: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """The gradients of the summed loss with respect to each linear layer's output, by hand
        (no autograd graph through the model): at the logits ``softmax(z) − onehot(y)`` for
        cross-entropy, or autograd on the loss alone for another task's loss (:mod:`.tasks`), then
        ``g W`` and each activation's backward, module by module. Records each layer's input."""
        x = features
        for module in dense.prefix:
            x = module(x)
        layers = iter(self._layers)
        outputs: list[torch.Tensor] = []
        for module in dense.chain:
            if type(module) is nn.Linear:
                next(layers).input = x
                x = F.linear(x, module.weight, module.bias)
            else:
                x = module(x)
            outputs.append(x)
        if self.loss is None:
            g = torch.softmax(x, dim=1)
            g[torch.arange(g.shape[0]), labels] -= 1.0
        else:
            with torch.enable_grad():
                logits = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.loss(logits, labels), [logits])
        grads: list[torch.Tensor] = []
        for position in range(len(dense.chain) - 1, -1, -1):
            module = dense.chain[position]
            if type(module) is nn.Linear:
                grads.append(g)
                if position:
                    g = g.mm(module.weight)
            else:
                g = _ACTIVATION_BACKWARD[type(module)](g, outputs[position])
        grads.reverse()
        return grads

    @staticmethod
    def _conv_per_sample(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
        """Per-sample weight gradients, ``[b, C_out · C_in · kh · kw]`` per chunk of at most
        ``CONV_CHUNK_ELEMENTS`` elements (chunks bound the workspace memory and are never concatenated)
        (:func:`_conv_per_sample_chunks`, all held)."""
        return list(_conv_per_sample_chunks(module, a, g))


    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """One DP-SGD step on a Poisson-sampled batch (which may be empty).

        The gradients are written straight into one flat buffer: Gaussian noise ``N(0, (σC/B)²)``
        from the generator first, then the clipped sum scaled by ``1/B`` added in place by the GEMMs/GEMVs that form
        it (``B`` the expected batch size). That is ``(Σ clipped + N(0, σ²C²)) / B``, in fewer passes.
        """
        params = self._params
        if self._noise is not None:
            grads = self._noise.draw()
        else:
            if self._std > 0:
                assert isinstance(self.generator, torch.Generator)
                flat = torch.empty(self._size, dtype=self._dtype).normal_(0.0, self._std, generator=self.generator)
            else:
                flat = torch.zeros(self._size, dtype=self._dtype)
            grads = [part.view_as(p) for part, p in zip(torch.split(flat, [p.numel() for p in params]), params, strict=True)]
        if features.shape[0]:
            self._accumulate(features, labels, grads, 1.0 / self.expected_batch_size)
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _parameters(self) -> list[torch.Tensor]:
        params: list[torch.Tensor] = []
        for layer in self._layers:
            params.append(layer.module.weight)
            bias = getattr(layer.module, "bias", None)  # an embedding has none
            if bias is not None:
                params.append(bias)
        return params
