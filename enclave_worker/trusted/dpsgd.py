"""DP-SGD by per-sample-norm book-keeping: clipped gradients without per-sample gradients for dense layers.

One step on a Poisson-sampled batch:

1. forward through the model, keeping each trainable layer's input ``a`` and output ``z``;
2. ``torch.autograd.grad(sum-loss, [z_1 … z_L])`` — gradients with respect to the layer outputs
   only, so autograd skips every weight-gradient product;
3. per-sample squared gradient norms, layer by layer: for ``nn.Linear`` on flat inputs
   ``‖g_i‖²·‖a_i‖²`` (+ ``‖g_i‖²`` for the bias) — the per-sample gradient ``g_i a_iᵀ`` is never
   formed (Bu et al., "Automatic clipping / book-keeping", ICML 2023; Li et al. ghost clipping,
   ICLR 2022); for ``nn.Conv2d`` the per-sample gradients come from one grouped convolution
   backward (small for the CNNs in the registry);
4. clip factors ``c_i = min(1, C / ‖∇_i‖)`` and the clipped sum per layer in one product:
   ``(c ⊙ g)ᵀ a`` for dense layers, ``cᵀ G`` over the per-sample gradients ``G`` for convolutions;
5. Gaussian noise ``N(0, σ²C²)`` on every summed gradient, division by the expected batch size
   ``q·n`` (Opacus's convention for Poisson sampling), and the wrapped optimizer's step.

Convolutional models see Poisson batches padded with zero rows to a multiple of a few rows
(:func:`pad_multiple`); a padded row's clip factor is 0, so it adds nothing. oneDNN builds its
convolution kernels per input shape, and Poisson batch sizes keep producing new shapes: padding
bounds them to a handful (0.05–0.15 of the digits CNN's DP/non-private time ratio on this
machine, see docs/models.md). It needs every module to treat rows independently (:data:`ROW_WISE`), as DP-SGD itself
does; other models are not padded.

It computes exactly what Opacus's DP-SGD computes (tests compare both on the same batches) at
close to the cost of a non-private step. Supported trainable layers: ``nn.Linear`` (2-D inputs)
and ``nn.Conv2d`` (groups = 1); anything else with trainable parameters is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .models import Standardize

EPS = 1e-6
CONV_CHUNK_ELEMENTS = 128 * 32 * 16 * 9
"""Per-sample conv gradients are formed this many elements at a time (2.25 MiB of float32): 128
samples of the digits CNN's 16→32 layer, the whole batch of its 1→16 layer. It trades time for
memory; measured on that layer at batch 256 (DP/non-private epoch time, working set): 64 samples
→ 1.54, 1.5–1.7; 128 → 1.46, 1.7; 256 → 1.40, 2.0–2.1."""
IM2COL_MAX_WIDTH = 16
"""Convolutions with at most this many inputs per output (``C_in · kh · kw``) use im2col + bmm."""


ROW_WISE: tuple[type[nn.Module], ...] = (
    nn.Sequential, nn.Linear, nn.Conv2d, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.MaxPool2d, nn.AvgPool2d,
    nn.Flatten, nn.Dropout, nn.Identity, Standardize,
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


@dataclass
class _Layer:
    module: nn.Linear | nn.Conv2d
    input: torch.Tensor | None = None
    output: torch.Tensor | None = None


POISSON_DRAW_ELEMENTS = 1 << 20
"""Geometric gaps drawn at once by :func:`poisson_batches` (8 MiB of float64): the batches of many
steps come from one draw, so a step's sampling is not a dozen small operations of its own."""


def _gap_chunk(expected: float) -> int:
    """Gaps drawn per batch: the expected batch plus 8 standard deviations (rarely not enough)."""
    return int(expected + 8 * expected**0.5 + 16)


def poisson_batches(rows: int, rate: float, steps: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Indices of ``steps`` independent Poisson-sampled batches: in each, every one of ``rows``
    rows independently with probability ``rate``.

    Draws the gaps between selected rows from a geometric distribution (exactly the gaps of
    independent Bernoulli trials), so the cost follows the batch size, not the table size; the
    gaps of many batches are drawn and summed in one go (:data:`POISSON_DRAW_ELEMENTS`).
    """
    if not 0 < rate <= 1:
        raise ValueError(f"sample rate must be in (0, 1], got {rate}")
    if rate == 1:
        for _ in range(steps):
            yield torch.arange(rows)
        return
    chunk = _gap_chunk(rate * rows)
    group = max(1, POISSON_DRAW_ELEMENTS // chunk)
    for start in range(0, steps, group):
        count = min(group, steps - start)
        positions = torch.empty(count, chunk, dtype=torch.float64).geometric_(rate, generator=generator).cumsum_(1).sub_(1.0)
        inside = positions < rows
        batches = positions[inside].long().split(inside.sum(1).tolist())
        last = positions[:, -1].tolist()
        for batch, end in zip(batches, last, strict=True):
            # The chunk ran out before the table did (past 8 standard deviations): keep drawing.
            yield batch if end >= rows - 1 else torch.cat([batch, _more_positions(rows, rate, end, chunk, generator)])


def _more_positions(rows: int, rate: float, last: float, chunk: int, generator: torch.Generator | None) -> torch.Tensor:
    picked: list[torch.Tensor] = []
    while last < rows - 1:
        positions = torch.empty(chunk, dtype=torch.float64).geometric_(rate, generator=generator).cumsum_(0).add_(last)
        picked.append(positions[positions < rows])
        last = float(positions[-1])
    return torch.cat(picked).long()


def supported(model: nn.Module) -> bool:
    """Whether every trainable parameter of ``model`` sits in a layer this engine handles."""
    try:
        _trainable_layers(model)
    except UnsupportedLayer:
        return False
    return True


def _trainable_layers(model: nn.Module) -> list[nn.Linear | nn.Conv2d]:
    layers: list[nn.Linear | nn.Conv2d] = []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if isinstance(module, nn.Linear):
            layers.append(module)
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str):
            layers.append(module)
        else:
            raise UnsupportedLayer(f"{type(module).__name__} has trainable parameters the book-keeping engine cannot clip")
    return layers


def _im2col(module: nn.Conv2d, a: torch.Tensor, out_hw: torch.Size) -> torch.Tensor:
    """Columns ``[b, C_in · kh · kw, H_out · W_out]`` of a zero-padded input, ordered like the
    conv weight's ``[C_in, kh, kw]``: one strided view and one copy (``F.unfold`` is slower)."""
    ph, pw = module.padding  # type: ignore[misc]
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
        generator: torch.Generator | None = None,
    ) -> None:
        if max_grad_norm <= 0 or noise_multiplier < 0 or expected_batch_size <= 0:
            raise ValueError("max_grad_norm and expected_batch_size must be positive, noise_multiplier non-negative")
        self.model = model
        self.optimizer = optimizer
        self.max_grad_norm = float(max_grad_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.expected_batch_size = float(expected_batch_size)
        self.generator = generator
        self._layers = [_Layer(m) for m in _trainable_layers(model)]
        self._by_module = {id(layer.module): layer for layer in self._layers}
        self._hooks = [layer.module.register_forward_hook(self._remember) for layer in self._layers]
        self._size = sum(p.numel() for p in self._parameters())
        dtypes = {p.dtype for p in self._parameters()}
        if len(dtypes) != 1:
            raise UnsupportedLayer(f"trainable parameters of one dtype are needed, got {sorted(map(str, dtypes))}")
        self._dtype = dtypes.pop()
        self.pad_multiple = pad_multiple(model, expected_batch_size)

    def _remember(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        layer = self._by_module[id(module)]
        layer.input = inputs[0].detach()
        layer.output = output

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
        grads = [torch.zeros_like(p) for p in self._parameters()]
        return grads, self._accumulate(features, labels, grads, 1.0)

    def _accumulate(self, features: torch.Tensor, labels: torch.Tensor, into: list[torch.Tensor], factor: float) -> torch.Tensor:
        """Add ``factor`` times the clipped sum to the tensors ``into`` (one per parameter, as
        :meth:`_parameters`); return the per-sample gradient norms before clipping."""
        rows = features.shape[0]
        padding = -rows % self.pad_multiple
        if padding:
            features = torch.cat([features, features.new_zeros(padding, *features.shape[1:])])
            labels = torch.cat([labels, labels.new_zeros(padding)])
        logits = self.model(features)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        outputs = [layer.output for layer in self._layers]
        assert all(o is not None for o in outputs), "every trainable layer must run in the forward pass"
        output_grads = torch.autograd.grad(loss, outputs)  # type: ignore[arg-type]
        batch = features.shape[0]
        norms_sq = torch.zeros(batch, dtype=features.dtype)
        prepared: list[tuple[_Layer, torch.Tensor | list[torch.Tensor], torch.Tensor | None]] = []
        for layer, g in zip(self._layers, output_grads, strict=True):
            a = layer.input
            assert a is not None
            if isinstance(layer.module, nn.Linear):
                if a.dim() != 2:
                    raise UnsupportedLayer("the book-keeping engine handles nn.Linear on flat (2-D) inputs only")
                g_sq = torch.linalg.vector_norm(g, dim=1).square()
                a_sq = torch.linalg.vector_norm(a, dim=1).square()
                norms_sq += g_sq * (a_sq + 1.0) if layer.module.bias is not None else g_sq * a_sq
                prepared.append((layer, g, None))
            else:
                per_sample = self._conv_per_sample(layer.module, a, g)
                part_norms = [torch.linalg.vector_norm(part, dim=1) for part in per_sample]
                norms_sq += (part_norms[0] if len(part_norms) == 1 else torch.cat(part_norms)).square()
                bias = g.sum(dim=(2, 3)) if layer.module.bias is not None else None
                if bias is not None:
                    norms_sq += torch.linalg.vector_norm(bias, dim=1).square()
                prepared.append((layer, per_sample, bias))
        norms = norms_sq.sqrt()
        scale = (self.max_grad_norm / (norms + EPS)).clamp_(max=1.0)
        if factor != 1.0:
            scale.mul_(factor)
        if padding:
            scale[rows:] = 0.0
            norms = norms[:rows]
        targets = iter(into)
        for layer, g_or_ps, bias in prepared:
            module = layer.module
            weight = next(targets)
            if isinstance(module, nn.Linear):
                assert isinstance(g_or_ps, torch.Tensor) and layer.input is not None
                weight.addmm_((g_or_ps * scale[:, None]).t(), layer.input)
                if module.bias is not None:
                    next(targets).addmv_(g_or_ps.t(), scale)
            else:
                # Per-sample gradients are at hand for the norms: the clipped sum is one GEMV per chunk.
                flat = weight.view(-1)
                for part, part_scale in zip(g_or_ps, scale.split([len(part) for part in g_or_ps]), strict=True):
                    flat.addmv_(part.t(), part_scale)
                if bias is not None:
                    next(targets).addmv_(bias.t(), scale)
            layer.input = layer.output = None
        return norms

    @staticmethod
    def _conv_per_sample(module: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> list[torch.Tensor]:
        """Per-sample weight gradients, ``[b, C_out · C_in · kh · kw]`` per chunk of at most
        ``CONV_CHUNK_ELEMENTS`` elements (chunks bound the workspace memory and are never concatenated).

        Narrow inputs (``C_in · kh · kw ≤ IM2COL_MAX_WIDTH``, e.g. a first layer on grey images) go
        through an explicit im2col view and one batched matrix product; wider ones through one
        grouped convolution backward per chunk (oneDNN), which is faster there (measured on this
        machine at batch 256: 0.19 vs 0.51 ms for 1→16 channels, 1.18 vs 1.89 ms for 16→32).
        """
        c_in, c_out = a.shape[1], g.shape[1]
        kh, kw = module.kernel_size
        chunk = max(1, CONV_CHUNK_ELEMENTS // (c_out * c_in * kh * kw))
        parts = []
        for a_part, g_part in zip(a.split(chunk), g.split(chunk), strict=True):
            batch = a_part.shape[0]
            if c_in * kh * kw <= IM2COL_MAX_WIDTH:
                columns = _im2col(module, a_part, g_part.shape[2:])
                parts.append(torch.bmm(g_part.flatten(2), columns.transpose(1, 2)).flatten(1))
            else:
                # aten directly, with a real (uninitialised) weight: torch.nn.grad.conv2d_weight
                # passes an expanded stride-0 one, and oneDNN is 10-15 % slower with it here.
                _, grouped, _ = torch.ops.aten.convolution_backward(
                    g_part.reshape(1, batch * c_out, *g.shape[2:]),
                    a_part.reshape(1, batch * c_in, *a.shape[2:]),
                    a_part.new_empty(batch * c_out, c_in, kh, kw),
                    None, list(module.stride), list(module.padding), list(module.dilation),  # type: ignore[arg-type]
                    False, [0, 0], batch, [False, True, False],
                )
                parts.append(grouped.view(batch, -1))
        return parts

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """One DP-SGD step on a Poisson-sampled batch (which may be empty).

        The gradients are written straight into one flat buffer: Gaussian noise ``N(0, (σC/B)²)``
        first, then the clipped sum scaled by ``1/B`` added in place by the GEMMs/GEMVs that form
        it (``B`` the expected batch size). That is ``(Σ clipped + N(0, σ²C²)) / B``, in fewer passes.
        """
        params = self._parameters()
        flat = torch.empty(self._size, dtype=self._dtype)
        std = self.noise_multiplier * self.max_grad_norm / self.expected_batch_size
        if std > 0:
            flat.normal_(0.0, std, generator=self.generator)
        else:
            flat.zero_()
        grads = [part.view_as(p) for part, p in zip(flat.split([p.numel() for p in params]), params, strict=True)]
        if features.shape[0]:
            self._accumulate(features, labels, grads, 1.0 / self.expected_batch_size)
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _parameters(self) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for layer in self._layers:
            params.append(layer.module.weight)
            if layer.module.bias is not None:
                params.append(layer.module.bias)
        return params
