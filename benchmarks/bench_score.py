"""``make bench-score``: scoring throughput of the evaluator enclave (issue 16's figure).

The digits CNN (channels 16, 32; dense 64) is scored on a 10,000-row test set (scikit-learn's
1,797 digits, shifted by up to one pixel and lightly noised to 10,000 rows) by real trusted
processes launched by the simulated platform: the key manager takes the test set and admits the
model, releases the keys of each scoring, and the evaluator scores it. A round is one public and one
private scoring of a fresh submission index (the evaluator signs each (index, split) once), timed
around the ``score`` request as the host makes it — the test set's and the model's ciphertexts
cross the process boundary every time, are hashed, the keys are unwrapped, the forward passes run
and the receipt is signed. The first scoring decrypts the test set (it is cached after); it is
reported apart. Beside it, in the same process, the same CNN's plain torch forward pass over the
same rows is the baseline the enclave's overhead is read against.

Prints one line per round and the summary line::

    scoring throughput: median N rows/s (public P rows/s, private Q rows/s), first scoring F rows/s; plain torch T rows/s
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from eth_utils import to_canonical_address

from enclave_worker.sim_platform import SimPlatform
from enclave_worker.trusted.competition import sign
from enclave_worker.trusted.dataset import DatasetPackage
from enclave_worker.trusted.models import ModelSpec, build_model
from enclave_worker.trusted.onchain import Architecture, CompetitionStatus, Metric, Role, Split
from enclave_worker.trusted.receipt import Deposit
from marketplace.competing import seal_submission, seal_test_set
from marketplace.datasets import digits
from marketplace.serving import model_weights

CHAIN_ID = 31337
COMPETITIONS = bytes.fromhex("c0" * 20)
COMPETITION = 1
ROWS = 10_000
PUBLIC_BPS = 3000
SPEC = ModelSpec(architecture="cnn", channels=(16, 32), hidden_sizes=(64,), epochs=1, batch_size=64, learning_rate=1e-3, max_grad_norm=1.0)


def test_set(rows: int, seed: int = 0) -> DatasetPackage:
    """Digits shifted by up to a pixel and noised, ``rows`` of them."""
    base = digits()
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, base.rows, rows)
    images = base.features[picked].copy()
    for i, (dy, dx) in enumerate(rng.integers(-1, 2, size=(rows, 2))):
        images[i] = np.roll(images[i], (int(dy), int(dx)), axis=(1, 2))
    images = np.clip(images + rng.normal(0, 0.05, images.shape).astype(np.float32), 0, 1).astype(np.float32)
    return DatasetPackage(images, base.labels[picked], base.schema)


def cnn_weights(package: DatasetPackage, steps: int = 60) -> tuple[torch.nn.Module, bytes]:
    torch.manual_seed(0)
    module = build_model(SPEC, package.schema)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    base = digits()
    x, y = torch.from_numpy(base.features), torch.from_numpy(base.labels)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    module.eval()
    return module, model_weights(module, SPEC, package.schema)


def plain_rows_per_second(module: torch.nn.Module, features: np.ndarray, repeats: int = 5) -> float:
    x = torch.from_numpy(features)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            for start in range(0, len(x), 4096):
                torch.softmax(module(x[start : start + 4096]).double(), dim=1)
            times.append(time.perf_counter() - started)
    return len(x) / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the evaluator enclave")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    package = test_set(args.rows)
    module, weights = cnn_weights(package)
    platform = SimPlatform(Ed25519PrivateKey.generate())  # a throw-away simulated platform
    km = platform.launch(Role.KEY_MANAGER, threads=1)
    evaluator = platform.launch(Role.EVALUATOR, threads=args.threads)
    try:
        organizer, participant = Account.create(), Account.create()
        domain: dict[str, Any] = {"chain_id": CHAIN_ID, "competitions": COMPETITIONS}
        sealed_test = seal_test_set(package, key_manager_key=km.process.encryption_key, chain_id=CHAIN_ID, competitions=COMPETITIONS)
        deposit = Deposit(sealed_test.content_hash, sealed_test.wrapped_key, km.process.signer)
        test_key = km.process.request(
            "deposit_test_set", chain_id=CHAIN_ID, competitions=COMPETITIONS, organizer=to_canonical_address(organizer.address),
            wrapped_key=sealed_test.wrapped_key, signature=sign(organizer, deposit, chain_id=CHAIN_ID, competitions=COMPETITIONS),
            ciphertext=sealed_test.ciphertext,
        )["sealed_key"]  # fmt: skip
        rules: dict[str, Any] = {
            "competition_id": COMPETITION, "test_set_hash": sealed_test.content_hash, "schema_hash": package.schema.hash(),
            "metric": int(Metric.ACCURACY), "public_split_bps": PUBLIC_BPS, "ladder_step": 10_000, "max_parameters": 0,
            "architectures": int(Architecture.CNN),
        }  # fmt: skip
        sub = seal_submission(
            weights, key_manager_key=km.process.encryption_key, chain_id=CHAIN_ID, competitions=COMPETITIONS,
            competition_id=COMPETITION, participant=participant.address,
        )  # fmt: skip
        admitted = km.process.request(
            "admit_submission", chain_id=CHAIN_ID, competitions=COMPETITIONS, **rules, competition_status=int(CompetitionStatus.OPEN),
            closes_at=2**40, now=1, participant=to_canonical_address(participant.address), ciphertext=sub.ciphertext,
            wrapped_key=sub.wrapped_key,
            signature=sign(participant, Deposit(sub.content_hash, sub.wrapped_key, km.process.signer), **domain),
        )  # fmt: skip

        def score(index: int, split: Split) -> tuple[float, int]:
            keys = km.process.request(
                "release_evaluation", chain_id=CHAIN_ID, competitions=COMPETITIONS, **rules,
                competition_status=int(CompetitionStatus.OPEN), organizer=to_canonical_address(organizer.address), closes_at=1,
                now=2, index=index, split=int(split), previous_best=0, next_public=index, public_scored=False, private_scored=False,
                participant=to_canonical_address(participant.address), submission_hash=sub.content_hash, test_set_sealed_key=test_key,
                submission_sealed_key=admitted["sealed_key"], evaluator_signer=evaluator.process.signer, evaluator_active=True,
                evaluator_key=evaluator.process.encryption_key,
            )  # fmt: skip
            started = time.perf_counter()
            reply = evaluator.process.request(
                "score", chain_id=CHAIN_ID, competitions=COMPETITIONS, **rules, index=index, split=int(split), previous_best=0,
                test_set_key=keys["test_set_key"], test_set=sealed_test.ciphertext, submission_hash=sub.content_hash,
                submission_key=keys["submission_key"], submission=sub.ciphertext,
            )  # fmt: skip
            return time.perf_counter() - started, int(reply["rows"])

        first_seconds, first_rows = score(0, Split.PUBLIC)
        first = first_rows / first_seconds
        print(f"first scoring (decrypts the test set): {first_rows} rows in {first_seconds * 1000:.1f} ms = {first:,.0f} rows/s")
        public, private, overall = [], [], []
        for r in range(args.rounds):
            pub_s, pub_rows = score(1 + 2 * r, Split.PUBLIC)
            priv_s, priv_rows = score(2 + 2 * r, Split.PRIVATE)
            public.append(pub_rows / pub_s)
            private.append(priv_rows / priv_s)
            overall.append((pub_rows + priv_rows) / (pub_s + priv_s))
            plain = plain_rows_per_second(module, package.features)
            print(
                f"round {r + 1}: public {public[-1]:,.0f} rows/s, private {private[-1]:,.0f} rows/s, "
                f"all {overall[-1]:,.0f} rows/s; plain torch {plain:,.0f} rows/s"
            )
        plain = plain_rows_per_second(module, package.features)
        print(
            f"scoring throughput: median {statistics.median(overall):,.0f} rows/s (public {statistics.median(public):,.0f} rows/s, "
            f"private {statistics.median(private):,.0f} rows/s), first scoring {first:,.0f} rows/s; plain torch {plain:,.0f} rows/s"
        )
        digest = hashlib.sha256(sealed_test.ciphertext).hexdigest()[:12]
        sizes = f"{len(sealed_test.ciphertext):,} B ciphertext {digest}…), model {len(weights):,} B"
        print(f"test set {args.rows} rows ({sizes}, {args.threads} enclave thread(s)")
    finally:
        evaluator.close()
        km.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
