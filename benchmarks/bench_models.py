"""ResNet-32 and VGG-9 on 32x32 colour images: DP-SGD against non-private training, the enclave job
against direct training, and inference through the serving enclave — one run.

``make bench-models`` measures, on 50,000 synthetic 32x32x3 images (:func:`marketplace.datasets.synthetic_images`;
no image set of that size ships in a package here) at batch 256 with 2 threads:

- **epoch time, DP and non-private side by side**, for ResNet-32 (width 16) and VGG-9 (width 64),
  both with GroupNorm: the same model, data and thread count; a non-private step (a shuffled batch
  of 256, cross-entropy, ``backward``, the optimizer) and a DP step (a Poisson batch of expected
  size 256 from the ChaCha20 CSPRNG, the book-keeping engine's clipping and noise, as the enclave
  runs it), alternating, after ``WARM_UP_STEPS`` untimed steps each; the medians of ``--steps``
  steps each, times the 196 steps of an epoch, are the epoch times, and their quotient the ratio;
- **the enclave job against direct training**: one whole ResNet-32 job of ``--job-epochs`` epochs
  on the 50,000 images at ε = 1 through the trainer enclave process (decrypt, train, seal, sign)
  and the same ``train_dp`` called directly on the plaintext, alternating, medians of
  ``--job-rounds``; the directly trained model's accuracy on ``TEST_ROWS`` held-out images
  against the majority class;
- **inference through the enclave (bulk)**: that trained ResNet-32 listed and served end to end
  (``sterling up`` on an anvil node: SDK → gateway → inference enclave → back, HPKE both ways,
  vouchers), ``--bulk`` held-out images asked in one bulk call (the SDK splits them into
  envelopes of at most 4 MiB), images per second, median of ``--repeats``; its labels must equal
  the model's own on those images.

The last line reads
``bench-models: resnet32 dp epoch X min (ratio R), vgg9 dp epoch Y min (ratio S), resnet32 enclave inference Z img/s``.
Figures and the noise seen are in docs/models.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.bench_dp import enclave_against_direct
from enclave_worker.trusted import dpsgd, runtime
from enclave_worker.trusted.csprng import ChaCha20Generator
from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.training import make_optimizer

THREADS = 2
BATCH = 256
TRAIN_ROWS = 50_000
TEST_ROWS = 5_000
WARM_UP_STEPS = 10
"""Untimed steps per mode first: oneDNN builds its kernels per input shape on first use, and the
DP steps' Poisson batches come in about six padded shapes at batch 256."""
TRAINER_BUDGET_MIB = 12 * 1024
"""The trainer enclave's memory for the ResNet-32 job: its planner bounds a step's batch at 15
standard deviations above 256 rows (596) and counts 16 bytes per activation value, about 8.4 GiB;
a DP step of 256 rows measures 2.1 GiB here. The trusted default, 2 GiB, is for the tabular models."""
MYELIN_MINUTES = {"resnet32": 13.4, "vgg9": 7.82}
"""The seed's results table (Myelin, one enclave): minutes per epoch."""
MYELIN_RESNET32_IMAGES_PER_SECOND = 453.0

SPECS: dict[str, ModelSpec] = {
    "resnet32": ModelSpec(architecture="resnet", depth=32, width=16, epochs=1, batch_size=BATCH, learning_rate=0.005,
                          max_grad_norm=1.0, seed=0),
    "vgg9": ModelSpec(architecture="vgg", depth=9, width=64, epochs=1, batch_size=BATCH, learning_rate=0.002,
                      max_grad_norm=1.0, seed=0),
}  # fmt: skip


def split(data: DatasetPackage, train_rows: int) -> tuple[DatasetPackage, DatasetPackage]:
    return (
        DatasetPackage(data.features[:train_rows], data.labels[:train_rows], data.schema),
        DatasetPackage(data.features[train_rows:], data.labels[train_rows:], data.schema),
    )


@dataclass(frozen=True)
class StepTiming:
    """Median step times of one model, non-private and DP, and what they make per epoch."""

    model: str
    non_private: float
    dp: float
    non_private_steps: list[float]
    dp_steps: list[float]
    steps_per_epoch: int

    @property
    def ratio(self) -> float:
        return self.dp / self.non_private

    @property
    def dp_epoch_minutes(self) -> float:
        return self.dp * self.steps_per_epoch / 60

    @property
    def non_private_epoch_minutes(self) -> float:
        return self.non_private * self.steps_per_epoch / 60


def time_steps(name: str, data: DatasetPackage, *, steps: int) -> StepTiming:
    """Alternate non-private and DP steps of ``SPECS[name]`` on ``data``; medians of ``steps`` each."""
    spec = SPECS[name]
    torch.manual_seed(0)
    plain_model = build_model(spec, data.schema)
    dp_model = build_model(spec, data.schema)
    dp_model.load_state_dict(plain_model.state_dict())
    plain_opt = make_optimizer(spec, plain_model)
    rng = ChaCha20Generator.from_seed(0)
    engine = dpsgd.BookKeepingDPSGD(dp_model, make_optimizer(spec, dp_model), max_grad_norm=spec.max_grad_norm,
                                    noise_multiplier=1.0, expected_batch_size=BATCH, generator=rng.substream(1))  # fmt: skip
    features, labels = torch.from_numpy(data.features), torch.from_numpy(data.labels)
    steps_per_epoch = math.ceil(data.rows / BATCH)
    order = torch.randperm(data.rows, generator=torch.Generator().manual_seed(0))
    batches = dpsgd.poisson_batches(data.rows, BATCH / data.rows, WARM_UP_STEPS + steps, rng.substream(2))
    plain_model.train()
    dp_model.train()

    def plain_step(i: int) -> None:
        picked = order[(i * BATCH) % (data.rows - BATCH):][:BATCH]
        plain_opt.zero_grad(set_to_none=True)
        torch.autograd.backward(F.cross_entropy(plain_model(features[picked]), labels[picked]))
        plain_opt.step()

    def dp_step() -> None:
        picked = next(batches)
        engine.step(features[picked], labels[picked])

    plain_times: list[float] = []
    dp_times: list[float] = []
    try:
        for i in range(WARM_UP_STEPS + steps):
            pair: list[tuple[list[float], Callable[[], None]]] = [(plain_times, partial(plain_step, i)), (dp_times, dp_step)]
            for bucket, fn in pair if i % 2 else pair[::-1]:
                start = time.perf_counter()
                fn()
                if i >= WARM_UP_STEPS:
                    bucket.append(time.perf_counter() - start)
    finally:
        engine.close()
    return StepTiming(name, statistics.median(plain_times), statistics.median(dp_times), plain_times, dp_times, steps_per_epoch)


def accuracy(model: nn.Module, data: DatasetPackage) -> float:
    model.eval()
    with torch.inference_mode():
        predicted = torch.cat([model(x).argmax(1) for x in torch.split(torch.from_numpy(data.features), 1000)]).numpy()
    return float((predicted == data.labels).mean())


def enclave_inference(model: nn.Module, train: DatasetPackage, test: DatasetPackage, *, bulk: int, repeats: int) -> tuple[list[float], int]:
    """Serve ``model`` through ``sterling up`` and time bulk requests of ``bulk`` held-out images.

    Returns the images per second of each request, and on how many of the images the enclave's
    labels equal the model's own."""
    from benchmarks.bench_infer import BenchModel, SterlingUp
    from marketplace.serving import model_weights

    spec = SPECS["resnet32"]
    rows = np.ascontiguousarray(np.resize(test.features, (bulk, *test.features.shape[1:])))
    weights = model_weights(model, spec, test.schema)
    bench = BenchModel(spec, test.schema, model, weights, train, test, rows[:1000])  # type: ignore[arg-type]  # a Sequential
    with torch.inference_mode():
        expected = torch.cat([model(x).argmax(1) for x in torch.split(torch.from_numpy(rows), 1000)]).numpy()
    path = SterlingUp(bench, clients=1, queries_per_client=bulk * (repeats + 1) * 2, processes=1)
    try:
        path.bulk(rows[:256])  # warm-up: the enclave loads and unseals the model on first use
        rates = []
        equal = 0
        for _ in range(repeats):
            start = time.perf_counter()
            labels = path.bulk(rows)
            rates.append(bulk / (time.perf_counter() - start))
            equal = int((labels == expected).sum())
    finally:
        path.close()
    return rates, equal


def _spread(values: list[float]) -> str:
    middle = statistics.median(values)
    return f"spread {(max(values) - min(values)) / middle:.0%}" if middle else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=TRAIN_ROWS, help="training images (50,000: an epoch of CIFAR-10's size)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per mode and model (median)")
    parser.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--job-rounds", type=int, default=1, help="enclave and direct jobs each (median); 0 skips the job and inference")
    parser.add_argument("--job-epochs", type=int, default=1)
    parser.add_argument("--bulk", type=int, default=5_000, help="images per bulk inference request")
    parser.add_argument("--repeats", type=int, default=3, help="bulk inference requests (median)")
    args = parser.parse_args(argv)
    from marketplace.datasets import synthetic_images

    torch.set_num_threads(THREADS)
    runtime.keep_freed_memory()
    train, test = split(synthetic_images(args.rows + TEST_ROWS, seed=0), args.rows)
    print(f"data: {train.rows:,} synthetic 32x32x3 training images, {test.rows:,} held out; threads {THREADS}; batch {BATCH}")
    print(f"epoch = median step x {math.ceil(train.rows / BATCH)} steps; medians of {args.steps} steps per mode after "
          f"{WARM_UP_STEPS} warm-up steps, modes alternating; DP = book-keeping engine, Poisson sampling, ChaCha20 CSPRNG")
    print(f"{'model':9s} {'params':>9s} {'non-private s/step':>18s} {'dp s/step':>9s} {'ratio':>6s} "
          f"{'non-private min/epoch':>21s} {'dp min/epoch':>12s} {'Myelin min/epoch':>16s}")
    timings: dict[str, StepTiming] = {}
    for name in args.models:
        params = sum(p.numel() for p in build_model(SPECS[name], train.schema).parameters())
        t = time_steps(name, train, steps=args.steps)
        timings[name] = t
        print(f"{name:9s} {params:9,d} {t.non_private:18.3f} {t.dp:9.3f} {t.ratio:6.2f} {t.non_private_epoch_minutes:21.2f} "
              f"{t.dp_epoch_minutes:12.2f} {MYELIN_MINUTES[name]:16.2f}   "
              f"[non-private {_spread(t.non_private_steps)}, dp {_spread(t.dp_steps)}]")
    rate: float | None = None
    if args.job_rounds:
        spec = SPECS["resnet32"].model_copy(update={"epochs": args.job_epochs})
        enclave_s, direct_s, model = enclave_against_direct(spec, train, rounds=args.job_rounds, memory_budget_mib=TRAINER_BUDGET_MIB)
        enclave, direct = statistics.median(enclave_s), statistics.median(direct_s)
        majority = float(np.bincount(test.labels).max() / test.rows)
        print(f"resnet32 job, {args.job_epochs} epoch(s) at epsilon 1 on {train.rows:,} images: through the enclave "
              f"{enclave / 60:.2f} min vs direct {direct / 60:.2f} min, ratio {enclave / direct:.2f} (median of {args.job_rounds}); "
              f"held-out accuracy {accuracy(model, test):.3f} (majority class {majority:.3f})")
        rates, equal = enclave_inference(model, train, test, bulk=args.bulk, repeats=args.repeats)
        rate = statistics.median(rates)
        print(f"resnet32 inference through the enclave, bulk of {args.bulk:,} images: {rate:.0f} img/s "
              f"(rounds {', '.join(f'{r:.0f}' for r in rates)}; {_spread(rates)}); "
              f"labels equal to the model's own on {equal:,}/{args.bulk:,}; "
              f"Myelin {MYELIN_RESNET32_IMAGES_PER_SECOND:.0f} img/s")
    parts = []
    if "resnet32" in timings:
        parts.append(f"resnet32 dp epoch {timings['resnet32'].dp_epoch_minutes:.2f} min (ratio {timings['resnet32'].ratio:.2f})")
    if "vgg9" in timings:
        parts.append(f"vgg9 dp epoch {timings['vgg9'].dp_epoch_minutes:.2f} min (ratio {timings['vgg9'].ratio:.2f})")
    if rate is not None:
        parts.append(f"resnet32 enclave inference {rate:.0f} img/s")
    print("bench-models: " + ", ".join(parts) if len(parts) == 3 else "bench-models (partial run): " + ", ".join(parts))


if __name__ == "__main__":
    main()
