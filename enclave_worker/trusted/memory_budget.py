"""The trainer's memory budget: what a job will need, known before any data key is opened.

An enclave's memory is fixed when it is launched (an SGX enclave size, a Nitro enclave's memory), so
the trainer refuses a job it cannot finish rather than run out of memory half-way, after the data keys
were released and ε reserved. The plan is computed from what is known before decryption — the
model spec, the schema the host declares for the datasets, their ciphertext sizes and chunk sizes —
and again, authoritatively, from the packages' own headers once the keys are open.

It chooses how the rows are held (``docs/enclave-protocol.md``, "Datasets larger than the enclave"):

* ``in_memory`` — all rows decrypted into one array, when they fit;
* ``scanned`` — rows read from the host each time a *window* of Poisson batches is gathered: the
  batches of ``window_steps`` consecutive steps are drawn, then one scan over every chunk of every
  dataset in a fixed order collects their rows. The window holds at most ``window_rows`` rows: the
  expected count plus 15 standard deviations plus 100 rows, which a window's batches exceed with
  probability below e^-112 (Bernstein's inequality); the largest window that fits the budget is taken.

The budget covers what running a job adds to the process; the process's code and libraries as
loaded at start (interpreter, torch, Opacus with the SciPy it imports: about 365 MiB resident for a
trainer, of which ~110 MiB shared library pages) come on top, and so does OpenDP (~65 MiB with the
scikit-learn and pandas its prelude imports), loaded by the first job that asks for private metrics.
Each part is an upper estimate of what the code allocates:

=================  ==========================================================================
part               bytes
=================  ==========================================================================
runtime            96 MiB: what the training code touches on first use, whatever the data (torch's
                   kernels and thread pools, MKL's buffers, the accountant's tables; measured
                   75 MiB on a trainer's first job of 500 rows, 1 MiB more on its second)
model              P·4·(2 + optimizer states) + noise blocks 2·4·max(2^18, P) + 4 MiB (P parameters)
step               (B + 15√B + 100)·(3·input + 16·activations) (+ convolution workspace)
sampling           32 · the geometric gaps :func:`.dpsgd.poisson_batches` draws at once
io                 2 scan streams · 3 spans + 2 row blocks + the largest package header (1 MiB)
fingerprints       16 per sealed chunk (:mod:`.hosted`)
rows               in memory: rows·(1.25·input + 8); scanned: window_rows·(input + 40)
canaries, metrics  the audit's canaries and their scoring, the private metrics' 4,096-row blocks
result             4·P·4 + 1 MiB (weights, their safetensors bytes, the sealed copy, the reply)
=================  ==========================================================================

(``input`` is a row's feature bytes; ``activations`` the values a row produces in one forward pass.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from . import dpsgd
from .dataformat import TAG_LEN
from .dataset import MAX_HEADER_BYTES, Schema
from .errors import MemoryBudgetExceeded
from .hosted import BLOCK_BYTES, FINGERPRINT_LEN, span_chunks
from .models import ModelSpec, build_model

MIB = 1 << 20
DEFAULT_BUDGET = 2048 * MIB
"""A trainer launched without ``--memory-budget-mib`` plans within 2 GiB."""
TAIL_SIGMAS = 15
TAIL_ROWS = 100
WINDOW_ROW_OVERHEAD = 40
"""Bytes per window row beside its features: its label, its index, and the sort of the indices."""
METRICS_BLOCK = 4096
RUNTIME_RESERVE = 96 * MIB
"""Memory the training code takes on first use whatever the job (see the table above)."""

Mode = Literal["in_memory", "scanned"]


def tail_rows(mean: float) -> int:
    """Rows a window (or a step) of Poisson batches with ``mean`` expected rows fits but with
    probability below e^-112: ``mean + 15·√mean + 100``."""
    return math.ceil(mean + TAIL_SIGMAS * math.sqrt(mean) + TAIL_ROWS)


@dataclass(frozen=True)
class DatasetShape:
    """What the plan needs of one dataset: its chunking (from the ciphertext header and size) and
    its rows (exact once the package header is read, an upper bound before)."""

    chunk_size: int
    chunks: int
    rows: int


@dataclass(frozen=True)
class MemoryPlan:
    """How a job's rows are held, and the memory that needs."""

    mode: Mode
    needs: int
    budget: int
    rows: int
    steps_per_epoch: int
    window_steps: int
    """Steps whose batches one scan gathers (scanned); all of an epoch's (in memory)."""
    window_rows: int
    """Rows a window holds (scanned); 0 in memory."""
    parts: tuple[tuple[str, int], ...]

    @property
    def scans_per_epoch(self) -> int:
        return math.ceil(self.steps_per_epoch / self.window_steps) if self.mode == "scanned" else 0

    def to_reply(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "needs": self.needs,
            "budget": self.budget,
            "rows": self.rows,
            "window_steps": self.window_steps,
            "window_rows": self.window_rows,
            "scans_per_epoch": self.scans_per_epoch,
        }


@dataclass(frozen=True)
class _ModelSize:
    parameters: int
    activations: int
    convolutional: bool


def _model_size(spec: ModelSpec, schema: Schema) -> _ModelSize:
    """Parameters and per-row activations of the spec's model, from a forward pass on the meta
    device (no memory, no draw from torch's generator)."""
    outputs: list[int] = []
    with torch.device("meta"):
        model = build_model(spec, schema)
        leaves = [m for m in model.modules() if not list(m.children())]
        hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel())) for m in leaves]
        with torch.no_grad():
            model(torch.zeros(1, *schema.feature_shape))
    for hook in hooks:
        hook.remove()
    return _ModelSize(
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        activations=sum(outputs),
        convolutional=any(isinstance(m, nn.Conv2d) for m in leaves),
    )


def _schedule(spec: ModelSpec, rows: int) -> tuple[float, int]:
    """(expected rows per step, steps per epoch), as :func:`.training.schedule` has them."""
    batch = min(spec.batch_size, rows)
    steps = math.ceil(rows / batch)
    return rows / steps, steps


def _mib(n: int) -> str:
    return f"{math.ceil(n / MIB):,}"


def plan(spec: ModelSpec, schema: Schema, datasets: list[DatasetShape], *, budget: int, canaries: int = 0) -> MemoryPlan:
    """Plan the job's memory: all rows in memory if they fit, else the largest scan window that does.

    Args:
        datasets: the providers' datasets, in the job's order.
        canaries: audit canaries that may join the training rows (``spec.audit_canaries`` before
            the coins are flipped, the included ones after).

    Raises:
        MemoryBudgetExceeded: not even a one-step window fits (the message gives the need and the budget).
    """
    size = _model_size(spec, schema)
    row_input = 4 * math.prod(schema.feature_shape)
    rows = sum(d.rows for d in datasets) + canaries
    expected, steps = _schedule(spec, rows)
    params = size.parameters
    optimizer_states = 2 if spec.optimizer == "adam" else 1
    gaps = dpsgd._gap_chunk(expected)
    sampling = 32 * min(max(1, dpsgd.POISSON_DRAW_ELEMENTS // gaps), steps) * gaps
    chunk = max(d.chunk_size for d in datasets)
    span = span_chunks(chunk) * (chunk + TAG_LEN)
    conv = 3 * 4 * dpsgd.CONV_CHUNK_ELEMENTS if size.convolutional else 0
    fixed: dict[str, int] = {
        "runtime": RUNTIME_RESERVE,
        "model": 4 * params * (2 + optimizer_states) + 2 * 4 * max(dpsgd.NOISE_BLOCK_ELEMENTS, params) + 4 * MIB,
        "step": tail_rows(expected) * (3 * row_input + 16 * size.activations) + conv,
        "sampling": sampling,
        "io": 2 * 3 * span + 2 * (BLOCK_BYTES + row_input + 8 * (BLOCK_BYTES // row_input + 1)) + MAX_HEADER_BYTES + 8,
        "fingerprints": FINGERPRINT_LEN * sum(d.chunks for d in datasets),
        "canaries": spec.audit_canaries * (4 * row_input + 8 * size.activations + 32),
        "metrics": METRICS_BLOCK * (2 * row_input + 12 * size.activations) if spec.private_metrics else 0,
        "result": 4 * 4 * params + MIB,
    }
    base = sum(fixed.values())
    in_memory = rows * (row_input + row_input // 4 + 8)
    if base + in_memory <= budget:
        return MemoryPlan(
            mode="in_memory", needs=base + in_memory, budget=budget, rows=rows, steps_per_epoch=steps,
            window_steps=steps, window_rows=0, parts=(*fixed.items(), ("rows", in_memory)),
        )  # fmt: skip
    per_row = row_input + WINDOW_ROW_OVERHEAD

    def window(k: int) -> int:
        return tail_rows(k * expected) * per_row

    if base + window(1) > budget:
        needs = base + window(1)
        largest = ", ".join(f"{name} {_mib(n)}" for name, n in sorted([*fixed.items(), ("rows", window(1))], key=lambda p: -p[1])[:3])
        raise MemoryBudgetExceeded(
            f"the job needs ~{_mib(needs)} MiB of enclave memory, budget {_mib(budget)} MiB: {rows:,} rows do not fit and "
            f"neither does a one-step scan window (largest parts, MiB: {largest})"
        )
    low, high = 1, steps  # the largest k with base + window(k) <= budget
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if base + window(mid) <= budget else (low, mid - 1)
    return MemoryPlan(
        mode="scanned", needs=base + window(low), budget=budget, rows=rows, steps_per_epoch=steps,
        window_steps=low, window_rows=tail_rows(low * expected), parts=(*fixed.items(), ("rows", window(low))),
    )  # fmt: skip
