"""DP-SGD against non-private training, side by side, and the cost of running a job in the enclave.

``make bench-dp`` runs, for the MLP on the hospital table (ACTG 175 resampled to 20,000 rows) and
the CNN on scikit-learn's digits, at batch sizes 64 and 256:

- the same model, data, batch size and thread count, one epoch non-private (shuffled batches taken
  by indexing) and one epoch DP (Poisson-sampled batches, the default book-keeping engine, noise and
  samples from the ChaCha20 CSPRNG as in the enclave), alternating, after three warm-up epochs
  each; medians of ``--epochs`` epochs each and their ratio;
- in the same rotation, the same DP epoch with torch's Mersenne Twister instead of the CSPRNG: the
  randomness A/B, printed after the table with the ratios either way;
- the noise alone: one step's N(0, σ²) for every parameter of the MLP and of the CNN, from each
  generator, and one epoch of Poisson sampling, interleaved medians;
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
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from enclave_worker.trusted import csprng, dpsgd, runtime
from enclave_worker.trusted.csprng import ChaCha20Generator
from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.models import ModelSpec, build_model

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
    return ModelSpec(
        architecture="mlp", hidden_sizes=(128, 64), epochs=1, batch_size=batch_size, learning_rate=1e-3, max_grad_norm=1.0, seed=0
    )


def cnn_spec(batch_size: int) -> ModelSpec:
    return ModelSpec(
        architecture="cnn", channels=(16, 32), hidden_sizes=(64,), epochs=1, batch_size=batch_size, learning_rate=1e-3,
        max_grad_norm=1.0, seed=0,
    )


@dataclass(frozen=True)
class EpochTiming:
    """Median epoch times of one (model, batch size) pair; ``dp`` draws from the CSPRNG as the enclave does."""

    model: str
    batch_size: int
    non_private: float
    dp: float
    epochs: int
    dp_torch_rng: float
    steps: int

    @property
    def ratio(self) -> float:
        return self.dp / self.non_private


class _Trainers:
    """A non-private and two DP trainers of the same architecture on the same tensors: the DP ones
    differ only in their randomness (the CSPRNG, as in the enclave, or torch's Mersenne Twister)."""

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
        self.loss = nn.CrossEntropyLoss()
        self.size = sum(p.numel() for p in self.plain.parameters() if p.requires_grad)
        self.sampling = ChaCha20Generator.from_seed(0).substream(2)
        self.engine = self._dp_engine(spec, data, ChaCha20Generator.from_seed(0).substream(1))
        self.engine_torch = self._dp_engine(spec, data, torch.Generator().manual_seed(1))
        self.gen_torch = torch.Generator().manual_seed(2)

    def _dp_engine(self, spec: ModelSpec, data: DatasetPackage, rng: dpsgd.Randomness) -> dpsgd.BookKeepingDPSGD:
        torch.manual_seed(0)
        private = build_model(spec, data.schema)
        return dpsgd.BookKeepingDPSGD(
            private,
            torch.optim.Adam(private.parameters(), lr=spec.learning_rate),
            max_grad_norm=spec.max_grad_norm,
            noise_multiplier=1.0,
            expected_batch_size=self.rate * self.rows,
            generator=rng,
        )

    def plain_epoch(self) -> None:
        for picked in torch.split(torch.randperm(self.rows, generator=self.gen), self.batch):
            self.plain_opt.zero_grad()
            self.loss(self.plain(self.features[picked]), self.labels[picked]).backward()
            self.plain_opt.step()

    def dp_epoch(self) -> None:
        """The enclave's DP epoch: CSPRNG noise and CSPRNG Poisson samples."""
        self._dp(self.engine, self.sampling)

    def dp_epoch_torch_rng(self) -> None:
        self._dp(self.engine_torch, self.gen_torch)

    def _dp(self, engine: dpsgd.BookKeepingDPSGD, sampling: dpsgd.Randomness) -> None:
        for picked in dpsgd.poisson_batches(self.rows, self.rate, self.steps, sampling):
            engine.step(self.features[picked], self.labels[picked])

    def close(self) -> None:
        for engine in (self.engine, self.engine_torch):
            engine.close()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_epochs(name: str, spec: ModelSpec, data: DatasetPackage, *, epochs: int) -> EpochTiming:
    """Rotate non-private and the two DP epochs after ``WARM_UP_EPOCHS`` of each; medians of ``epochs`` each."""
    trainers = _Trainers(spec, data)
    modes = [trainers.plain_epoch, trainers.dp_epoch, trainers.dp_epoch_torch_rng]
    times: list[list[float]] = [[] for _ in modes]
    try:
        for _ in range(WARM_UP_EPOCHS):
            for fn in modes:
                fn()
        for i in range(epochs):
            order = list(range(len(modes)))
            order = order[i % len(order):] + order[: i % len(order)]
            for k in order:
                times[k].append(_timed(modes[k]))
    finally:
        trainers.close()
    plain, dp, dp_torch = (statistics.median(t) for t in times)
    return EpochTiming(name, spec.batch_size, plain, dp, epochs, dp_torch, trainers.steps)


@dataclass(frozen=True)
class NoiseTiming:
    """Median time of one step's noise (every parameter), and of one epoch's Poisson samples, per generator."""

    model: str
    values: int
    torch_noise: float
    csprng_noise: float
    torch_sampling: float
    csprng_sampling: float
    csprng_by_summands: dict[int, float]


def time_randomness(name: str, spec: ModelSpec, data: DatasetPackage, *, rounds: int = 300) -> NoiseTiming:
    """The noise alone, per step, interleaved, each generator as the engine uses it: ``torch.normal_``
    on a torch generator once per step against the CSPRNG's hardened Gaussian a block of
    :data:`dpsgd.NOISE_BLOCK_ELEMENTS` at a time (divided by the block's steps); also the CSPRNG
    with fewer summands than :data:`csprng.NOISE_SUMMANDS`, and one epoch of Poisson batches from
    each generator, at the model's parameter count and the data's rows."""
    trainers = _Trainers(spec, data)
    trainers.close()
    size, std = trainers.size, 1.0 / (trainers.rate * trainers.rows)
    gen, rng = torch.Generator().manual_seed(0), ChaCha20Generator.from_seed(0)

    def sampling(source: dpsgd.Randomness) -> None:
        for _ in dpsgd.poisson_batches(trainers.rows, trainers.rate, trainers.steps, source):
            pass

    per_block = math.ceil(dpsgd.NOISE_BLOCK_ELEMENTS / size)
    counts = [k for k in (1, 2) if k != csprng.NOISE_SUMMANDS]
    def torch_steps() -> None:
        for _ in range(per_block):
            torch.empty(size).normal_(0.0, std, generator=gen)

    modes: list[Callable[[], object]] = [
        torch_steps,
        lambda: rng.gaussian(per_block * size, std=std),
        *(partial(rng.gaussian, per_block * size, std=std, summands=k) for k in counts),
    ]
    noise = [t / per_block for t in _interleaved(modes, max(15, rounds // per_block))]
    epochs = _interleaved([partial(sampling, gen), partial(sampling, rng)], max(5, rounds // 20))
    return NoiseTiming(name, size, noise[0], noise[1], epochs[0], epochs[1], dict(zip(counts, noise[2:], strict=True)))


def _interleaved(modes: list[Callable[[], object]], rounds: int) -> list[float]:
    for fn in modes:
        fn()
    times: list[list[float]] = [[] for _ in modes]
    for i in range(rounds):
        for k in (range(len(modes)) if i % 2 == 0 else reversed(range(len(modes)))):
            times[k].append(_timed(modes[k]))
    return [statistics.median(t) for t in times]


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
            for picked in torch.split(torch.randperm(trainers.rows, generator=trainers.gen), trainers.batch):
                trainers.plain_opt.zero_grad()
                trainers.loss(trainers.plain(trainers.features[picked]), trainers.labels[picked]).backward()
                trainers.plain_opt.step()
                peak = max(peak, _rss_mib())
    else:
        for picked in dpsgd.poisson_batches(trainers.rows, trainers.rate, 2 * trainers.steps, trainers.sampling):
            trainers.engine.step(trainers.features[picked], trainers.labels[picked])
            peak = max(peak, _rss_mib())
    trainers.close()
    print(json.dumps({"working_set_mib": peak - before}))


def training_memory(model: str, batch_size: int, mode: str, allocator: str = "tuned") -> float:
    """Working set (MiB) of two epochs of ``mode`` in a fresh process (see :func:`_memory_child`)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_dp", "--memory-child", model, str(batch_size), mode, allocator],
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
    enclave_times, direct_times, _ = enclave_against_direct(mlp_spec(256).model_copy(update={"epochs": epochs}), hospital_table(),
                                                            rounds=rounds)  # fmt: skip
    return JobTiming(statistics.median(enclave_times), statistics.median(direct_times), rounds)


def enclave_against_direct(
    spec: ModelSpec, data: DatasetPackage, *, rounds: int, memory_budget_mib: int | None = None
) -> tuple[list[float], list[float], nn.Module]:
    """The same DP job (ε = 1, δ = 1e-5) ``rounds`` times through a trainer enclave process
    (decrypt, train, seal, sign) and as ``train_dp`` called directly on the plaintext, alternating.

    Returns the seconds of each enclave job, of each direct run, and the last directly trained model."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from enclave_worker.host import EnclaveProcess
    from enclave_worker.trusted import dataformat, keywrap
    from enclave_worker.trusted.dataset import canonical_json
    from enclave_worker.trusted.onchain import DELTA_SCALE, EPSILON_SCALE, Role
    from enclave_worker.trusted.training import train_dp

    raw_spec = spec.to_bytes()
    key = dataformat.new_data_key()
    ciphertext = dataformat.encrypt_bytes(data.to_bytes(), key, kind=dataformat.Kind.DATASET, context=bytes(32))
    content_hash = hashlib.sha256(ciphertext).digest()
    schema = canonical_json(data.schema.to_json())
    market, chain_id = bytes(20), 31337
    consumer = keywrap.public_key_bytes(X25519PrivateKey.generate())
    enclave_times: list[float] = []
    direct_times: list[float] = []
    trained: list[nn.Module] = []

    def direct() -> None:
        trained[:] = [train_dp(spec, data, epsilon=1.0, delta=1e-5).model]

    with EnclaveProcess.start(Role.TRAINER, memory_budget_mib=memory_budget_mib) as enclave:
        for job_id in range(1, rounds + 1):
            job_key = enclave.request("prepare_job", chain_id=chain_id, market=market, job_id=job_id)["job_key"]
            released = keywrap.wrap(key, job_key, info=keywrap.release_info(chain_id, market, job_id, content_hash))
            through_enclave = partial(
                enclave.request,
                "run", chain_id=chain_id, market=market, job_id=job_id, model_spec=raw_spec,
                model_spec_hash=hashlib.sha256(raw_spec).digest(), epsilon=EPSILON_SCALE, delta=round(1e-5 * DELTA_SCALE),
                consumer_key=consumer,
                datasets=[{"content_hash": content_hash, "released_key": released, "ciphertext": ciphertext, "schema": schema}],
            )
            pair: list[tuple[list[float], Callable[[], object]]] = [(enclave_times, through_enclave), (direct_times, direct)]
            for bucket, fn in pair if job_id % 2 else pair[::-1]:
                bucket.append(_timed(fn))
    return enclave_times, direct_times, trained[0]


def _print_randomness_ab(timings: list[EpochTiming], noise: list[NoiseTiming]) -> None:
    """The randomness A/B lines (before the whole-job line and the last line)."""
    print("randomness A/B, same epochs and process as above: DP epoch with the ChaCha20 CSPRNG (as in the enclave) "
          "vs torch's Mersenne Twister")
    print(f"{'model':5s} {'batch':>5s} {'dp csprng s':>11s} {'dp torch s':>10s} {'csprng/torch':>12s} "
          f"{'dp/np csprng':>12s} {'dp/np torch':>11s}")
    for t in timings:
        print(f"{t.model:5s} {t.batch_size:5d} {t.dp:11.4f} {t.dp_torch_rng:10.4f} {t.dp / t.dp_torch_rng:12.2f} "
              f"{t.ratio:12.2f} {t.dp_torch_rng / t.non_private:11.2f}")
    steps = {t.model: t.dp / t.steps for t in timings if t.batch_size == 256}
    for n in noise:
        share = f" = {n.csprng_noise / steps[n.model]:.0%} of a DP step at batch 256" if n.model in steps else ""
        others = ", ".join(f"{k} summand{'s' if k > 1 else ''} {t * 1e3:.3f} ms" for k, t in n.csprng_by_summands.items())
        print(f"noise alone per step, {n.model} ({n.values:,} values): torch {n.torch_noise * 1e3:.3f} ms, "
              f"csprng {n.csprng_noise * 1e3:.3f} ms ({n.csprng_noise / n.torch_noise:.1f}x){share} "
              f"[{csprng.NOISE_SUMMANDS} summands; {others}]; "
              f"poisson sampling per epoch at batch 256: torch {n.torch_sampling * 1e3:.2f} ms, csprng {n.csprng_sampling * 1e3:.2f} ms")


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
    timings: list[EpochTiming] = []
    print(
        f"threads {THREADS}; allocator {args.allocator}; medians of {args.epochs} epochs per mode; "
        "DP = book-keeping engine, Poisson sampling, ChaCha20 CSPRNG"
    )
    print(
        f"{'model':5s} {'batch':>5s} {'non-private s':>13s} {'dp s':>8s} {'ratio':>6s} "
        f"{'mem np MiB':>10s} {'mem dp MiB':>10s} {'mem ratio':>9s}"
    )
    for name, (data, make_spec) in tables.items():
        if name not in args.models:
            continue
        for batch in args.batch_sizes:
            timing = time_epochs(name, make_spec(batch), data, epochs=args.epochs)
            if args.skip_memory:
                mem = ""
            else:
                plain_mib = training_memory(name, batch, "plain", args.allocator)
                dp_mib = training_memory(name, batch, "dp", args.allocator)
                mem = f"{plain_mib:10.1f} {dp_mib:10.1f} {dp_mib / max(plain_mib, 0.1):9.2f}"
            print(f"{name:5s} {batch:5d} {timing.non_private:13.4f} {timing.dp:8.4f} {timing.ratio:6.2f} {mem}")
            timings.append(timing)
            if batch == 256:
                at_256[name] = timing.ratio
    _print_randomness_ab(timings, [time_randomness(name, make_spec(256), data) for name, (data, make_spec) in tables.items()
                                   if name in args.models])
    if not args.skip_job:
        job = time_enclave_job(rounds=args.job_rounds)
        print(
            f"whole job through the enclave {job.enclave:.2f} s vs direct DP training {job.direct:.2f} s: "
            f"ratio {job.ratio:.2f} (median of {job.rounds})"
        )
    if "mlp" in at_256 and "cnn" in at_256:
        print(f"dp/non-dp epoch time at batch 256: mlp {at_256['mlp']:.2f}, cnn {at_256['cnn']:.2f}")


if __name__ == "__main__":
    main()
