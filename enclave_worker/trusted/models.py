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
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn
from torch.nn import functional as F

from .dataset import FeatureBounds, Schema, canonical_json
from .errors import InvalidModelSpec
from .onchain import EPSILON_SCALE
from .receipt import epsilon_to_units
from .tasks import ProportionalHazard, TargetScale

MAX_SPEC_BYTES = 1 << 20


class ModelSpec(BaseModel):
    """A training job's model and hyper-parameters (ε and δ come from the job on-chain)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: Literal["logistic_regression", "mlp", "cnn", "resnet", "vgg"]
    hidden_sizes: tuple[int, ...] = Field(
        default=(), max_length=8, description="dense layer widths (mlp; the cnn's head; the vgg's two hidden layers)"
    )
    channels: tuple[int, ...] = Field(default=(), max_length=4, description="conv layer widths (cnn only)")
    depth: int | None = Field(
        default=None,
        ge=6,
        le=110,
        description="weight layers: resnet 6n+2 (20, 32, 44, 56, 110), vgg 6 to 15 (9: VGG-9); resnet and vgg only",
    )
    width: int | None = Field(
        default=None,
        ge=4,
        le=256,
        description="channels of the first stage, doubled in each of the next two (resnet: 16, vgg: 64 if unset)",
    )
    norm_groups: int = Field(
        default=8, ge=1, le=64, description="GroupNorm groups per normalisation layer (resnet and vgg); must divide width"
    )
    activation: Literal["relu", "tanh", "square"] = Field(
        default="relu",
        description=(
            "hidden activation; tanh (a tempered sigmoid) often trains better under DP-SGD; "
            "square (x*x) keeps the network a polynomial, as homomorphic encryption needs"
        ),
    )
    embedding_dim: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="width of each categorical feature's embedding (default: min(8, vocabulary size)); schemas with categories only",
    )
    regression_loss: Literal["mse", "huber"] = Field(
        default="mse", description="regression only: squared error or Huber (delta 1), on targets scaled to [-1, 1] by their bounds"
    )
    survival_head: Literal["proportional", "per_interval"] = Field(
        default="proportional",
        description=(
            "survival only: proportional (one covariate score shared by all intervals plus a baseline each: "
            "fewer parameters, better under DP) or per_interval (a separate linear output per interval)"
        ),
    )
    survival_prior: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description=(
            "survival only: the share expected to survive past the last interval, from the consumer's own data or "
            "public knowledge; the model starts from a constant hazard that gives it"
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
        if self.architecture in ("resnet", "vgg"):
            if self.depth is None:
                raise ValueError(f"a {self.architecture} needs a depth (resnet: 6n+2, e.g. 20 or 32; vgg: 6 to 15, e.g. 9)")
            if self.architecture == "resnet" and (self.depth - 2) % 6:
                raise ValueError(f"a resnet's depth is 6n+2 (20, 32, 44, 56, 110), got {self.depth}")
            if self.architecture == "vgg" and self.depth > 15:
                raise ValueError(f"a vgg's depth is 6 to 15, got {self.depth}")
            if self.architecture == "resnet" and self.hidden_sizes:
                raise ValueError("a resnet takes no hidden sizes (global average pooling, then the output layer)")
            if self.architecture == "vgg" and self.hidden_sizes and len(self.hidden_sizes) != 2:
                raise ValueError("a vgg has two hidden dense layers: give two hidden sizes, or none for 4·width each")
            if self.base_width % self.norm_groups:
                raise ValueError(f"norm_groups {self.norm_groups} must divide width {self.base_width}")
        elif self.depth is not None or self.width is not None:
            raise ValueError("only a resnet or a vgg takes depth and width")
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

    @property
    def base_width(self) -> int:
        """Channels of a resnet's or vgg's first stage (the spec's ``width``, or the default)."""
        return self.width if self.width is not None else (16 if self.architecture == "resnet" else 64)

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
        """Canonical JSON bytes; their SHA-256 is the on-chain ``modelSpecHash``.

        Fields added after the first release (:data:`_LATER_FIELDS`) are left out at their
        defaults, so a spec that does not use them keeps the bytes, and the hash, it had before."""
        doc = self.model_dump(mode="json")
        for name, default in _LATER_FIELDS.items():
            if doc[name] == default:
                del doc[name]
        return canonical_json(doc)

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


_LATER_FIELDS: dict[str, object] = {"depth": None, "width": None, "norm_groups": 8, "regression_loss": "mse", "survival_prior": 0.5,
                                        "survival_head": "proportional", "embedding_dim": None}
"""Spec fields :meth:`ModelSpec.to_bytes` omits at these defaults (see there)."""


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


class CategoricalEmbedding(nn.Module):
    """Flat features with categorical columns in, numeric columns and an embedding per categorical
    column out: ``[numeric columns in order, embedding of the first categorical column, …]``.

    A categorical column holds its category's index (the schema's vocabulary order); each has an
    ``nn.Embedding`` of ``vocabulary size × dim`` trained like any layer (DP-SGD clips its
    per-sample gradient, a single row of the table per example). Indices are rounded and clamped
    to the vocabulary, so a stray value cannot index outside the table."""

    numeric: torch.Tensor
    categorical: torch.Tensor

    def __init__(self, width: int, positions: list[int], sizes: list[int], dim: int | None) -> None:
        super().__init__()
        self.register_buffer("numeric", torch.tensor([i for i in range(width) if i not in positions], dtype=torch.long))
        self.register_buffer("categorical", torch.tensor(positions, dtype=torch.long))
        self.dims = [dim or min(8, size) for size in sizes]
        self.embeddings = nn.ModuleList(nn.Embedding(size, width) for size, width in zip(sizes, self.dims, strict=True))
        self.sizes = sizes

    @property
    def out_features(self) -> int:
        return len(self.numeric) + sum(self.dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = x.index_select(1, self.categorical).round().long()
        parts = [x.index_select(1, self.numeric)]
        for j, (embedding, size) in enumerate(zip(self.embeddings, self.sizes, strict=True)):
            parts.append(embedding(codes[:, j].clamp(0, size - 1)))
        return torch.cat(parts, dim=1)


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


def _activation_factory(spec: ModelSpec) -> Callable[[], nn.Module]:
    return {"tanh": nn.Tanh, "square": Square, "relu": nn.ReLU}[spec.activation]


def _activation(spec: ModelSpec) -> nn.Module:
    return _activation_factory(spec)()


class BasicBlock(nn.Module):
    """A ResNet basic block for small images (He et al. 2016, section 4.2) with GroupNorm in place
    of BatchNorm: ``act(GN(conv3x3(act(GN(conv3x3(x))))) + shortcut(x))``.

    When the block changes the width or the resolution, the shortcut is the parameter-free
    "option A": the input subsampled by the stride and zero-padded with the new channels. Every
    operation acts on one row (image) at a time, as DP-SGD's per-example clipping needs (batch
    statistics would mix examples)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int, activation: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(groups, c_out)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.act2 = activation()
        self.stride = stride
        self.extra_channels = c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        shortcut = x
        if self.stride != 1:
            shortcut = shortcut[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        result: torch.Tensor = self.act2(out + shortcut)
        return result


def _conv_norm(c_in: int, c_out: int, groups: int, activation: Callable[[], nn.Module], stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(groups, c_out), activation()]


def _resnet(spec: ModelSpec, channels: int, num_outputs: int) -> list[nn.Module]:
    """ResNet-(6n+2) for small images: a 3x3 stem, three stages of n basic blocks at width w, 2w,
    4w (the last two starting with stride 2), global average pooling and the output layer."""
    assert spec.depth is not None
    blocks, width, groups = (spec.depth - 2) // 6, spec.base_width, spec.norm_groups
    activation = _activation_factory(spec)
    layers = _conv_norm(channels, width, groups, activation)
    c_in = width
    for stage in range(3):
        c_out = width << stage
        for block in range(blocks):
            layers.append(BasicBlock(c_in, c_out, 2 if stage and not block else 1, groups, activation))
            c_in = c_out
    return [*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_outputs)]


def _vgg(spec: ModelSpec, feature_shape: tuple[int, ...], num_outputs: int) -> list[nn.Module]:
    """VGG-d for small images: ``d − 3`` 3x3 convolutions (each with GroupNorm and the
    activation) in three stages of width w, 2w, 4w, 2x2 max pooling after each stage, then two
    hidden dense layers and the output layer: VGG-9 is 2+2+2 convolutions and 3 dense layers."""
    assert spec.depth is not None
    channels, height, width = feature_shape
    convs, w, groups = spec.depth - 3, spec.base_width, spec.norm_groups
    activation = _activation_factory(spec)
    layers: list[nn.Module] = []
    for stage in range(3):
        for _ in range(convs // 3 + (1 if stage < convs % 3 else 0)):
            layers += _conv_norm(channels, w << stage, groups, activation)
            channels = w << stage
        if height < 2 or width < 2:
            raise InvalidModelSpec(f"a vgg pools three times: images of at least 8x8 are needed, got {feature_shape}")
        layers.append(MaxPool2d(2))
        height, width = height // 2, width // 2
    hidden = spec.hidden_sizes or (4 * w, 4 * w)
    previous = channels * height * width
    layers.append(nn.Flatten())
    for size in hidden:
        layers += [nn.Linear(previous, size), activation()]
        previous = size
    return [*layers, nn.Linear(previous, num_outputs)]


def build_model(spec: ModelSpec, schema: Schema) -> nn.Sequential:
    """Instantiate the architecture a spec names for a dataset schema.

    - ``logistic_regression``: one linear layer on flat features;
    - ``mlp``: linear + the spec's activation (ReLU, tanh or square) per hidden size, then a
      linear output layer;
    - ``cnn``: for image features ``[channels, height, width]`` (8x8 digits, 28x28 images):
      per entry of ``channels`` a 3x3 convolution (padding 1) + the activation, with 2x2 max-pooling after
      every second one and after the last, then the ``hidden_sizes`` dense head;
    - ``resnet``: ResNet-``depth`` for small images (He et al. 2016, section 4.2: 20, 32, …), GroupNorm
      in place of BatchNorm (:class:`BasicBlock`), stages of ``width``, 2·``width``, 4·``width`` channels;
    - ``vgg``: VGG-``depth`` (VGG-9: six 3x3 convolutions of ``width`` … 4·``width`` channels with
      GroupNorm, three 2x2 max-pools, two hidden dense layers and the output layer).

    Every module acts on each row (image) alone — GroupNorm normalises within one image, never
    across the batch — so DP-SGD's per-example clipping bounds each example's influence.

    When the schema declares feature bounds, a :class:`ClipScale` comes first: it clips each
    bounded feature to its bounds and scales it to [-1, 1], or only clips when the spec has
    ``input_mean`` / ``input_scale`` (the consumer's :class:`Standardize`, next, then scales).

    Raises:
        InvalidModelSpec: the spec does not fit the schema.
    """
    if schema.task != "classification" and (spec.private_metrics or spec.audit_canaries):
        raise InvalidModelSpec(f"private_metrics and audit_canaries are for classification; this is a {schema.task} dataset")
    if schema.task != "regression" and spec.regression_loss != "mse":
        raise InvalidModelSpec(f"regression_loss is for regression; this is a {schema.task} dataset")
    if schema.task != "survival" and (spec.survival_prior != 0.5 or spec.survival_head != "proportional"):
        raise InvalidModelSpec(f"survival_prior and survival_head are for survival; this is a {schema.task} dataset")
    if spec.embedding_dim is not None and not schema.categories:
        raise InvalidModelSpec("embedding_dim is for datasets with categorical features; this schema declares none")
    if schema.categories and spec.input_mean is not None and spec.input_scale is not None:
        position = {name: i for i, name in enumerate(schema.feature_names)}
        for name, _ in schema.categories:
            i = position[name]
            if i < len(spec.input_mean) and (spec.input_mean[i] != 0 or spec.input_scale[i] != 1):
                raise InvalidModelSpec(f"{name!r} is categorical: its input_mean must be 0 and input_scale 1 (indices pass unchanged)")
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
    if spec.architecture in ("resnet", "vgg"):
        if len(schema.feature_shape) != 3:
            raise InvalidModelSpec(
                f"a {spec.architecture} needs image features [channels, height, width], the schema has {schema.feature_shape}"
            )
        body = _resnet(spec, schema.feature_shape[0], schema.num_outputs) if spec.architecture == "resnet" else (
            _vgg(spec, schema.feature_shape, schema.num_outputs)
        )
        return _initialise_output(nn.Sequential(*layers, *_with_output_layer(body, spec, schema), *_output_head(schema)), spec, schema)
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
        if schema.categories:
            position = {name: i for i, name in enumerate(schema.feature_names)}
            embed = CategoricalEmbedding(previous, [position[n] for n, _ in schema.categories],
                                         [len(v) for _, v in schema.categories], spec.embedding_dim)  # fmt: skip
            layers.append(embed)
            previous = embed.out_features
    for hidden in spec.hidden_sizes:
        layers += [nn.Linear(previous, hidden), _activation(spec)]
        previous = hidden
    layers = _with_output_layer([*layers, nn.Linear(previous, schema.num_outputs)], spec, schema)
    return _initialise_output(nn.Sequential(*layers, *_output_head(schema)), spec, schema)


def check_fits(spec: ModelSpec, schema: Schema) -> None:
    """Refuse a spec that cannot train on datasets of ``schema`` (an image network on flat features,
    a regression loss on a survival table, standardisation of the wrong width, …), as the trainer
    would once paid: :func:`build_model` on PyTorch's meta device, which allocates no weights.

    Raises:
        InvalidModelSpec: the spec does not fit the schema, with the reason.
    """
    with torch.device("meta"):
        build_model(spec, schema)


def _with_output_layer(layers: list[nn.Module], spec: ModelSpec, schema: Schema) -> list[nn.Module]:
    """``layers`` ending in the output linear layer, replaced by a :class:`~.tasks.ProportionalHazard`
    head for survival models that ask for it."""
    last = layers[-1]
    if schema.task == "survival" and spec.survival_head == "proportional" and isinstance(last, nn.Linear):
        return [*layers[:-1], ProportionalHazard(last.in_features, schema.num_outputs)]
    return layers


def _initialise_output(model: nn.Sequential, spec: ModelSpec, schema: Schema) -> nn.Sequential:
    """Survival: the last linear layer's bias at the logit of the constant hazard ``1 − p^(1/K)``
    whose curve reaches the spec's ``survival_prior`` ``p`` at the last interval's end — the
    consumer's prior, no statistic of the providers' rows. From hazard logits of 0 instead (a
    hazard of 1/2 per interval) DP-SGD spends many noisy steps just lowering them."""
    if schema.task == "survival":
        hazard = 1.0 - spec.survival_prior ** (1.0 / schema.num_outputs)
        logit = math.log(hazard / (1.0 - hazard))
        last = model[-1]
        with torch.no_grad():
            if isinstance(last, ProportionalHazard):
                last.baseline.weight.fill_(logit)
            elif isinstance(last, nn.Linear) and last.bias is not None:
                last.bias.fill_(logit)
    return model


def _output_head(schema: Schema) -> list[nn.Module]:
    """After the last linear layer: a regression model maps its outputs to the targets' units
    (:class:`~.tasks.TargetScale`); classification logits and survival hazard logits stay as they are."""
    return [TargetScale.for_schema(schema)] if schema.task == "regression" else []
