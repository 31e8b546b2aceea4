"""Registry of named model architectures and the JSON model spec that selects one.

Consumers choose an architecture by name and set its sizes and training hyper-parameters in a
JSON spec whose SHA-256 goes on-chain with the job; no consumer code runs in the enclave.
The optional ``input_mean`` / ``input_scale`` standardisation is supplied by the consumer
(computed on its own data), so no statistic of the providers' data is needed or released. When the
dataset schema declares feature bounds (public declarations of the provider, never read from the
rows), the model clips each bounded feature to them first and, unless the consumer standardises,
scales it to [-1, 1] (:class:`ClipScale`): unscaled tables train without the consumer computing
anything.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from .dataset import FeatureBounds, Schema, canonical_json
from .errors import InvalidModelSpec
from .onchain import EPSILON_SCALE
from .receipt import epsilon_to_units

MAX_SPEC_BYTES = 1 << 20


class ModelSpec(BaseModel):
    """A training job's model and hyper-parameters (ε and δ come from the job on-chain)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["logistic_regression", "mlp", "cnn"]
    hidden_sizes: tuple[int, ...] = Field(default=(), max_length=8, description="dense layer widths (mlp; the cnn's head)")
    channels: tuple[int, ...] = Field(default=(), max_length=4, description="conv layer widths (cnn only)")
    activation: Literal["relu", "tanh", "square"] = Field(
        default="relu",
        description=(
            "hidden activation; tanh (a tempered sigmoid) often trains better under DP-SGD; "
            "square (x*x) keeps the network a polynomial, as homomorphic encryption needs"
        ),
    )
    input_mean: tuple[float, ...] | None = None
    input_scale: tuple[float, ...] | None = None
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=65536, description="expected batch size; Poisson sampling rate = batch_size / rows")
    learning_rate: float = Field(gt=0, le=10)
    optimizer: Literal["sgd", "adam"] = "adam"
    max_grad_norm: float = Field(gt=0, le=1000)
    accountant: Literal["rdp", "prv"] = "rdp"
    seed: int | None = Field(
        default=None,
        ge=0,
        lt=2**63,
        description="seeds the model's initialisation only; DP sampling and noise always use a fresh seed from the OS",
    )
    private_metrics: tuple[Literal["class_counts", "train_accuracy", "train_loss"], ...] = Field(
        default=(),
        max_length=3,
        description="statistics of the providers' rows to release with DP (discrete Laplace); needs metrics_epsilon",
    )
    metrics_epsilon: float = Field(
        default=0.0, ge=0, le=10, description="ε spent on private_metrics, taken from the job's ε (training gets the rest)"
    )
    audit_canaries: int = Field(
        default=0,
        ge=0,
        le=10000,
        description="random-input canaries for a one-run privacy audit (Steinke et al. 2023) reported with the receipt; 0: none",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.architecture == "mlp" and not self.hidden_sizes:
            raise ValueError("an mlp needs at least one hidden size")
        if self.architecture == "logistic_regression" and self.hidden_sizes:
            raise ValueError("logistic_regression takes no hidden sizes")
        if self.architecture == "cnn" and not self.channels:
            raise ValueError("a cnn needs at least one conv channel width")
        if self.architecture != "cnn" and self.channels:
            raise ValueError("only a cnn takes channels")
        if any(c < 1 or c > 512 for c in self.channels):
            raise ValueError("channels must be in [1, 512]")
        if any(h < 1 or h > 4096 for h in self.hidden_sizes):
            raise ValueError("hidden sizes must be in [1, 4096]")
        if (self.input_mean is None) != (self.input_scale is None):
            raise ValueError("input_mean and input_scale go together")
        if self.input_scale is not None and any(s <= 0 for s in self.input_scale):
            raise ValueError("input_scale entries must be positive")
        if self.input_mean is not None and self.input_scale is not None and len(self.input_mean) != len(self.input_scale):
            raise ValueError("input_mean and input_scale differ in length")
        if len(set(self.private_metrics)) != len(self.private_metrics):
            raise ValueError("private_metrics has a repeated name")
        if bool(self.private_metrics) != (self.metrics_epsilon > 0):
            raise ValueError("private_metrics and a positive metrics_epsilon go together")
        if self.audit_canaries and self.audit_canaries < 20:
            raise ValueError("an audit needs at least 20 canaries")
        return self

    def training_epsilon(self, job_epsilon_units: int) -> float:
        """The part of a job's ε (on-chain micro-ε) left for training once the private metrics have theirs.

        Computed in micro-ε with the metrics' share rounded up, as the receipt counts it, so that
        training spent + metrics never exceeds the job's ε.

        Raises:
            InvalidModelSpec: ``metrics_epsilon`` leaves nothing for training.
        """
        left = job_epsilon_units - epsilon_to_units(self.metrics_epsilon)
        if left <= 0:
            raise InvalidModelSpec(
                f"metrics_epsilon {self.metrics_epsilon} leaves no ε for training out of the job's {job_epsilon_units / EPSILON_SCALE}"
            )
        return left / EPSILON_SCALE

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes; their SHA-256 is the on-chain ``modelSpecHash``."""
        return canonical_json(self.model_dump(mode="json"))

    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, raw: bytes) -> ModelSpec:
        """Parse and validate a spec.

        Raises:
            InvalidModelSpec: oversized, not JSON, or not a valid spec.
        """
        if len(raw) > MAX_SPEC_BYTES:
            raise InvalidModelSpec(f"model spec is {len(raw)} bytes, limit {MAX_SPEC_BYTES}")
        try:
            return cls.model_validate(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidModelSpec(f"model spec is not JSON: {e}") from e
        except ValidationError as e:
            raise InvalidModelSpec(f"invalid model spec: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from e


class Standardize(nn.Module):
    """Fixed (non-trainable) ``(x - mean) / scale``, so the released model is self-contained."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


class ClipScale(nn.Module):
    """Fixed (non-trainable) clipping of each feature to ``[low, high]``, then ``(x - center) / half_range``.

    Built from a schema's declared feature bounds (:meth:`from_bounds`): a bounded feature is
    clamped to ``[lo, hi]`` and mapped onto [-1, 1] (``center = (lo + hi) / 2``, ``half_range =
    (hi - lo) / 2``), or only clamped when the consumer's :class:`Standardize` follows; a feature
    without bounds passes unchanged. The bounds are buffers, so the released weights carry them and
    the model takes raw values. Every value depends on the declaration alone, none on a row:
    clipping and scaling cost no ε, and a row's output depends on that row only.
    """

    low: torch.Tensor
    high: torch.Tensor
    center: torch.Tensor
    half_range: torch.Tensor

    def __init__(self, low: torch.Tensor, high: torch.Tensor, center: torch.Tensor, half_range: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.register_buffer("center", center)
        self.register_buffer("half_range", half_range)

    @classmethod
    def from_bounds(cls, bounds: FeatureBounds, feature_shape: tuple[int, ...], *, scale: bool) -> ClipScale:
        """The module for a schema's declared ``bounds`` (one entry per flattened feature).

        Args:
            scale: map each bounded feature onto [-1, 1] after clipping; False to clip only (the
                consumer's standardisation does the scaling).
        """
        unbounded = float(torch.finfo(torch.float32).max)  # clamps no finite float32 (a package holds no other)
        low = [-unbounded if b is None else float(b[0]) for b in bounds]
        high = [unbounded if b is None else float(b[1]) for b in bounds]
        # In float64, then rounded: bounds too close for float32 still get a positive half range.
        center = [0.0 if b is None or not scale else (float(b[0]) + float(b[1])) / 2 for b in bounds]
        half = [1.0 if b is None or not scale else (float(b[1]) - float(b[0])) / 2 for b in bounds]

        def buffer(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64).to(torch.float32).reshape(feature_shape)

        return cls(buffer(low), buffer(high), buffer(center), buffer(half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # maximum/minimum rather than clamp: ONNX's Clip takes only scalar bounds.
        return (torch.maximum(torch.minimum(x, self.high), self.low) - self.center) / self.half_range


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Max pooling in channels-last layout, NCHW tensors in and out (forward and backward)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, kernel: list[int], stride: list[int]) -> torch.Tensor:
        xc = x.contiguous(memory_format=torch.channels_last)
        y: torch.Tensor
        y, indices = torch.ops.aten.max_pool2d_with_indices(xc, kernel, stride, [0, 0], [1, 1], False)
        ctx.save_for_backward(xc, indices)
        ctx.kernel, ctx.stride = kernel, stride
        return y.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        xc, indices = ctx.saved_tensors
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(memory_format=torch.channels_last), xc, ctx.kernel, ctx.stride, [0, 0], [1, 1], False, indices
        )
        return grad_x.contiguous(), None, None


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d(k)`` computed in channels-last layout: the same values and gradients, faster on CPU.

    PyTorch's NCHW max-pool kernel is slow on small maps: forward and backward of ``[232, 32, 8, 8]``
    take 1.75 ms on this machine, 1.08 ms through channels-last including both layout
    conversions (the pool was a quarter of the digits CNN's non-private step). The module has no
    state: saved models load into a plain ``nn.MaxPool2d`` too.
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__(kernel_size)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        k = int(self.kernel_size)  # type: ignore[arg-type]  # an int: __init__ takes nothing else
        return _ChannelsLastMaxPool.apply(input, [k, k], [k, k])  # type: ignore[no-untyped-call,no-any-return]  # apply is unannotated


class Square(nn.Module):
    """``x ↦ x²``, element-wise: the activation of HE-friendly networks (CryptoNets, TenSEAL's
    encrypted-MNIST tutorial), whose only non-linear operation is a multiplication, so the same
    weights can also be evaluated on CKKS ciphertexts (``make bench-infer`` compares the two).

    No state: a model with it saves and loads like any other. DP-SGD differentiates it through
    autograd (:mod:`.dpsgd`'s hand-differentiated dense path takes an activation's backward from
    its output, and ``x²`` does not determine the sign of ``x``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(x)


def _activation(spec: ModelSpec) -> nn.Module:
    if spec.activation == "tanh":
        return nn.Tanh()
    if spec.activation == "square":
        return Square()
    return nn.ReLU()


def build_model(spec: ModelSpec, schema: Schema) -> nn.Sequential:
    """Instantiate the architecture a spec names for a dataset schema.

    - ``logistic_regression``: one linear layer on flat features;
    - ``mlp``: linear + the spec's activation (ReLU, tanh or square) per hidden size, then a
      linear output layer;
    - ``cnn``: for image features ``[channels, height, width]`` (8x8 digits, 28x28 images):
      per entry of ``channels`` a 3x3 convolution (padding 1) + the activation, with 2x2 max-pooling after
      every second one and after the last, then the ``hidden_sizes`` dense head.

    When the schema declares feature bounds, a :class:`ClipScale` comes first: it clips each
    bounded feature to its bounds and scales it to [-1, 1], or only clips when the spec has
    ``input_mean`` / ``input_scale`` (the consumer's :class:`Standardize`, next, then scales).

    Raises:
        InvalidModelSpec: the spec does not fit the schema.
    """
    layers: list[nn.Module] = []
    standardised = spec.input_mean is not None and spec.input_scale is not None
    if schema.feature_bounds is not None:
        layers.append(ClipScale.from_bounds(schema.feature_bounds, schema.feature_shape, scale=not standardised))
    if spec.input_mean is not None and spec.input_scale is not None:
        width = 1
        for d in schema.feature_shape:
            width *= d
        if len(spec.input_mean) not in (width, schema.feature_shape[0]):
            raise InvalidModelSpec(f"input_mean has {len(spec.input_mean)} entries, the schema has {width} features")
        shape = (-1, *([1] * (len(schema.feature_shape) - 1))) if len(spec.input_mean) != width else schema.feature_shape
        layers.append(
            Standardize(
                torch.tensor(spec.input_mean, dtype=torch.float32).reshape(shape),
                torch.tensor(spec.input_scale, dtype=torch.float32).reshape(shape),
            )
        )
    if spec.architecture == "cnn":
        if len(schema.feature_shape) != 3:
            raise InvalidModelSpec(f"a cnn needs image features [channels, height, width], the schema has {schema.feature_shape}")
        channels, height, width = schema.feature_shape
        for i, out in enumerate(spec.channels):
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), _activation(spec)]
            channels = out
            if (i % 2 == 1 or i == len(spec.channels) - 1) and height >= 2 and width >= 2:
                layers.append(MaxPool2d(2))
                height, width = height // 2, width // 2
        layers.append(nn.Flatten())
        previous = channels * height * width
    else:
        if len(schema.feature_shape) != 1:
            raise InvalidModelSpec(f"{spec.architecture} needs flat features, the schema has shape {schema.feature_shape}")
        previous = schema.feature_shape[0]
    for hidden in spec.hidden_sizes:
        layers += [nn.Linear(previous, hidden), _activation(spec)]
        previous = hidden
    layers.append(nn.Linear(previous, schema.num_classes))
    return nn.Sequential(*layers)
