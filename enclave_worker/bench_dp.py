"""DP-SGD against non-private training, side by side, and the cost of running a job in the enclave.

``make bench-dp`` runs, for the MLP on the hospital table (ACTG 175 resampled to 20,000 rows) and
the CNN on scikit-learn's digits, at batch sizes 64 and 256:

- the same model, data, batch size and thread count, one epoch non-private (shuffled batches taken
  by indexing) and one epoch DP (Poisson-sampled batches, the default book-keeping engine),
  alternating, after three warm-up epochs each; medians of ``--epochs`` epochs each and their ratio;
- the training working set of each mode in a fresh process: the highest resident memory sampled
  after every step of two epochs, minus the resident memory just before training;

both under the allocator tuning the trainer enclave uses (:mod:`.trusted.runtime`; ``--allocator
default`` measures glibc's defaults instead),

and then one whole job through the trainer enclave process (decrypt, train, seal, sign) against
the same DP training called directly on the plaintext, medians of ``--job-rounds`` runs.
The last line reads ``dp/non-dp epoch time at batch 256: mlp X.XX, cnn Y.YY``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .trusted import dpsgd, runtime
from .trusted.dataset import DatasetPackage
from .trusted.models import ModelSpec, build_model

THREADS = 2
WARM_UP_EPOCHS = 3
"""Untimed epochs first: a DP run meets a new Poisson batch size on most early steps, and oneDNN
builds its convolution kernels per shape (about 0.05 of the CNN's ratio on this machine)."""
HOSPITAL_ROWS = 20_000


def hospital_table(rows: int = HOSPITAL_ROWS, seed: int = 0) -> DatasetPackage:
    """ACTG 175 resampled (with replacement) to ``rows`` rows, standardised per feature."""
    from marketplace.datasets import actg175

    base = actg175()
    picked = np.random.default_rng(seed).integers(0, base.rows, rows)
    features = base.features[picked]
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    return DatasetPackage(features.astype(np.float32), base.labels[picked], base.schema)


def digits_images() -> DatasetPackage:
    from marketplace.datasets import digits

    return digits()


def mlp_spec(batch_size: int) -> ModelSpec:
    return ModelSpec(architecture="mlp", hidden_sizes=(128, 64), epochs=1, batch_size=batch_size, learning_rate=1e-3, max_grad_norm=1.0, seed=0)


def cnn_spec(batch_size: int) -> ModelSpec:
    return ModelSpec(architecture="cnn", channels=(16, 32), hidden_sizes=(64,), epochs=1, batch_size=batch_size, learning_rate=1e-3, max_grad_norm=1.0, seed=0)


@dataclass(frozen=True)
class EpochTiming:
    """Median epoch times of one (model, batch size) pair."""

    model: str
    batch_size: int
    non_private: float
    dp: float
    epochs: int

    @property
    def ratio(self) -> float:
        return self.dp / self.non_private


class _Trainers:
    """A non-private and a DP trainer of the same architecture on the same tensors."""

    def __init__(self, spec: ModelSpec, data: DatasetPackage) -> None:
        self.features = torch.from_numpy(data.features)
        self.labels = torch.from_numpy(data.labels)
        self.rows = data.rows
        self.batch = spec.batch_size
        self.steps = int(np.ceil(self.rows / self.batch))
        self.rate = 1 / self.steps
        self.gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        self.plain = build_model(spec, data.schema)
        self.plain_opt = torch.optim.Adam(self.plain.parameters(), lr=spec.learning_rate)
        private = build_model(spec, data.schema)
        self.engine = dpsgd.BookKeepingDPSGD(
            private,
            torch.optim.Adam(private.parameters(), lr=spec.learning_rate),
            max_grad_norm=spec.max_grad_norm,
            noise_multiplier=1.0,
            expected_batch_size=self.rate * self.rows,
            generator=self.gen,
        )
        self.loss = nn.CrossEntropyLoss()

    def plain_epoch(self) -> None:
        for picked in torch.randperm(self.rows, generator=self.gen).split(self.batch):
            self.plain_opt.zero_grad()
            self.loss(self.plain(self.features[picked]), self.labels[picked]).backward()
            self.plain_opt.step()

    def dp_epoch(self) -> None:
        for picked in dpsgd.poisson_batches(self.rows, self.rate, self.steps, self.gen):
            self.engine.step(self.features[picked], self.labels[picked])


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_epochs(name: str, spec: ModelSpec, data: DatasetPackage, *, epochs: int) -> EpochTiming:
    """Alternate non-private and DP epochs after ``WARM_UP_EPOCHS`` of each; medians of ``epochs`` each."""
    trainers = _Trainers(spec, data)
    for _ in range(WARM_UP_EPOCHS):
        trainers.plain_epoch()
        trainers.dp_epoch()
    plain, dp = [], []
    for i in range(epochs):
        pair = [(plain, trainers.plain_epoch), (dp, trainers.dp_epoch)]
        for bucket, fn in pair if i % 2 == 0 else pair[::-1]:
            bucket.append(_timed(fn))
    return EpochTiming(name, spec.batch_size, statistics.median(plain), statistics.median(dp), epochs)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / (1 << 20)


def _memory_child(model: str, batch_size: int, mode: str, allocator: str) -> None:
    """Subprocess entry: print the training working set (MiB): the highest resident memory
    sampled after every step of two epochs, minus the resident memory just before training."""
    torch.set_num_threads(THREADS)
    if allocator == "tuned":
        runtime.keep_freed_memory()
    data = hospital_table() if model == "mlp" else digits_images()
    spec = mlp_spec(batch_size) if model == "mlp" else cnn_spec(batch_size)
    trainers = _Trainers(spec, data)
    before = _rss_mib()
    peak = before
    if mode == "plain":
        for _ in range(2):
            for picked in torch.randperm(trainers.rows, generator=trainers.gen).split(trainers.batch):
                trainers.plain_opt.zero_grad()
                trainers.loss(trainers.plain(trainers.features[picked]), trainers.labels[picked]).backward()
                trainers.plain_opt.step()
                peak = max(peak, _rss_mib())
    else:
        for picked in dpsgd.poisson_batches(trainers.rows, trainers.rate, 2 * trainers.steps, trainers.gen):
            trainers.engine.step(trainers.features[picked], trainers.labels[picked])
            peak = max(peak, _rss_mib())
    print(json.dumps({"working_set_mib": peak - before}))


def training_memory(model: str, batch_size: int, mode: str, allocator: str = "tuned") -> float:
    """Working set (MiB) of two epochs of ``mode`` in a fresh process (see :func:`_memory_child`)."""
    out = subprocess.run(
        [sys.executable, "-m", "enclave_worker.bench_dp", "--memory-child", model, str(batch_size), mode, allocator],
        capture_output=True, text=True, check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["working_set_mib"])


@dataclass(frozen=True)
class JobTiming:
    """Whole job through the enclave process vs DP training called directly."""

    enclave: float
    direct: float
    rounds: int

    @property
    def ratio(self) -> float:
        return self.enclave / self.direct


def time_enclave_job(*, rounds: int, epochs: int = 10) -> JobTiming:
    """Run the same DP job ``rounds`` times through a trainer enclave and directly, alternating."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from .host import EnclaveProcess
    from .trusted import dataformat, keywrap
    from .trusted.receipt import DELTA_SCALE, EPSILON_SCALE
    from .trusted.roles import Role
    from .trusted.training import train_dp

    data = hospital_table()
    spec = mlp_spec(256).model_copy(update={"epochs": epochs})
    raw_spec = spec.to_bytes()
    key = dataformat.new_data_key()
    ciphertext = dataformat.encrypt_bytes(data.to_bytes(), key, kind=dataformat.Kind.DATASET, context=bytes(32))
    content_hash = hashlib.sha256(ciphertext).digest()
    market, chain_id = bytes(20), 31337
    consumer = keywrap.public_key_bytes(X25519PrivateKey.generate())
    enclave_times, direct_times = [], []
    with EnclaveProcess.start(Role.TRAINER) as enclave:
        for job_id in range(1, rounds + 1):
            released = keywrap.wrap(key, enclave.encryption_key, info=keywrap.release_info(chain_id, market, job_id, content_hash))

            def through_enclave() -> None:
                enclave.request(
                    "run", chain_id=chain_id, market=market, job_id=job_id, model_spec=raw_spec,
                    model_spec_hash=hashlib.sha256(raw_spec).digest(), epsilon=EPSILON_SCALE, delta=round(1e-5 * DELTA_SCALE),
                    consumer_key=consumer, datasets=[{"content_hash": content_hash, "released_key": released, "ciphertext": ciphertext}],
                )

            def direct() -> None:
                train_dp(spec, data, epsilon=1.0, delta=1e-5)

            pair = [(enclave_times, through_enclave), (direct_times, direct)]
            for bucket, fn in pair if job_id % 2 else pair[::-1]:
                bucket.append(_timed(fn))
    return JobTiming(statistics.median(enclave_times), statistics.median(direct_times), rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=7, help="timed epochs per mode (median)")
    parser.add_argument("--job-rounds", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn"])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-job", action="store_true")
    parser.add_argument("--allocator", choices=["tuned", "default"], default="tuned",
                        help="tuned: keep freed memory in the heap, as the trainer enclave does; default: glibc's defaults")
    parser.add_argument("--memory-child", nargs=4, metavar=("MODEL", "BATCH", "MODE", "ALLOCATOR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        model, batch, mode, allocator = args.memory_child
        _memory_child(model, int(batch), mode, allocator)
        return
    torch.set_num_threads(THREADS)
    if args.allocator == "tuned":
        runtime.keep_freed_memory()
    tables = {"mlp": (hospital_table(), mlp_spec), "cnn": (digits_images(), cnn_spec)}
    at_256: dict[str, float] = {}
    print(f"threads {THREADS}; allocator {args.allocator}; medians of {args.epochs} epochs per mode; DP = book-keeping engine, Poisson sampling")
    print(f"{'model':5s} {'batch':>5s} {'non-private s':>13s} {'dp s':>8s} {'ratio':>6s} {'mem np MiB':>10s} {'mem dp MiB':>10s} {'mem ratio':>9s}")
    for name, (data, make_spec) in tables.items():
        if name not in args.models:
            continue
        for batch in args.batch_sizes:
            timing = time_epochs(name, make_spec(batch), data, epochs=args.epochs)
            if args.skip_memory:
                mem = ""
            else:
                plain_mib, dp_mib = training_memory(name, batch, "plain", args.allocator), training_memory(name, batch, "dp", args.allocator)
                mem = f"{plain_mib:10.1f} {dp_mib:10.1f} {dp_mib / max(plain_mib, 0.1):9.2f}"
            print(f"{name:5s} {batch:5d} {timing.non_private:13.4f} {timing.dp:8.4f} {timing.ratio:6.2f} {mem}")
            if batch == 256:
                at_256[name] = timing.ratio
    if not args.skip_job:
        job = time_enclave_job(rounds=args.job_rounds)
        print(f"whole job through the enclave {job.enclave:.2f} s vs direct DP training {job.direct:.2f} s: ratio {job.ratio:.2f} (median of {job.rounds})")
    if "mlp" in at_256 and "cnn" in at_256:
        print(f"dp/non-dp epoch time at batch 256: mlp {at_256['mlp']:.2f}, cnn {at_256['cnn']:.2f}")


if __name__ == "__main__":
    main()
