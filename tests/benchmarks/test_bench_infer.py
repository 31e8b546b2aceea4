"""`make bench-infer`'s harness: a short real run prints native and HE figures and says what it did not
measure; the Sterling branch reports its figures and catches wrong labels."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_infer
from benchmarks.bench_infer import BenchModel, LoadResult, NativeTorch, threaded_clients

REPO = Path(__file__).resolve().parents[2]
HAVE_TENSEAL = importlib.util.find_spec("tenseal") is not None


@pytest.fixture(scope="module")
def model() -> BenchModel:
    return bench_infer.prepare(epochs=15)


@pytest.mark.slow
def test_a_short_run_without_sterling_prints_native_and_he_figures_and_what_it_did_not_measure() -> None:
    he = "tenseal" if HAVE_TENSEAL else "none"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_infer", "--sterling", "none", "--he", he, "--repeats", "2",
         "--single-requests", "50", "--he-rows", "2", "--bulk-rows", "2000", "--train-epochs", "15", "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=True,
    )
    lines = proc.stdout.strip().splitlines()
    assert "torch from the safetensors weights = torch: 1000/1000 labels equal" in lines
    assert not any(line.startswith("CHECK FAILED") for line in lines), proc.stdout
    assert any(line.startswith("not measured (--sterling none): Sterling single request") for line in lines)
    # Never a Sterling figure without a Sterling run.
    assert not any(line.startswith("bench-infer: single p50") or "Sterling single request, p50" in line for line in lines)
    native = re.search(r"accuracy on held-out rows: native torch (\d+\.\d)%", proc.stdout)
    assert native is not None and float(native.group(1)) > 85
    figure = re.compile(r"  native torch, one row at a time, p50 +([\d.,]+) ms +rounds ([\d.]+) / ([\d.]+); spread \d+%")
    assert any(figure.fullmatch(line) for line in lines), proc.stdout
    if HAVE_TENSEAL:
        assert "TenSEAL labels = native torch's: 4/4 rows" in proc.stdout
        assert re.fullmatch(
            r"bench-infer \(Sterling not measured\): native single p50 \d+\.\d{3} ms, native batched [\d,]+ rows/s, HE per row [\d.]+ ms",
            lines[-1],
        ), lines[-1]
        he_ms = float(lines[-1].rsplit(" ", 2)[-2])
        assert 1 < he_ms < 60_000
    else:
        assert "not measured: TenSEAL CKKS (--he none)" in lines
        assert lines[-1].endswith("HE not measured")


class _InProcess(NativeTorch):
    """Torch in this process behind the SterlingPath interface: exercises the harness's Sterling
    branch (its figures, goals and last line), not Sterling. ``wrong`` flips some labels."""

    def __init__(self, model: BenchModel, wrong: bool = False) -> None:
        super().__init__(model.module)
        self.wrong = wrong

    def bulk(self, rows: np.ndarray) -> np.ndarray:
        labels = super().bulk(rows)
        if self.wrong:
            labels[::97] = (labels[::97] + 1) % 10
        return labels

    def concurrent(self, rows: np.ndarray, *, clients: int, requests: int) -> LoadResult:
        return threaded_clients(self.single, rows, clients=clients, requests=requests)

    def close(self) -> None:
        pass


def _run(model: BenchModel, path: _InProcess) -> tuple[bench_infer.Results, list[str]]:
    printed: list[str] = []
    results = bench_infer.run(model, path, repeats=2, single_requests=30, sterling_single_requests=30, bulk=1000, he=False,
                              clients=4, concurrent_requests=200, threads=1, out=printed.append)
    return results, printed


def test_the_sterling_branch_prints_the_documented_last_line(model: BenchModel) -> None:
    results, printed = _run(model, _InProcess(model))
    assert re.fullmatch(
        r"bench-infer: single p50 \d+\.\d\d ms, ratio to HE n/a \(HE not measured\), bulk ratio to native \d+\.\d\d, "
        r"concurrent [\d,]+ req/s p99 \d+\.\d ms",
        printed[-1],
    ), printed[-1]
    assert "accuracy, Sterling: " in "\n".join(printed)
    assert any(line.endswith("labels equal native torch's on 1,000 rows") and line.startswith("goal met") for line in printed)
    assert not results.notes
    assert len(results.figures["sterling_rps"].rounds) == 2


def test_wrong_labels_from_the_sterling_path_are_reported(model: BenchModel) -> None:
    results, printed = _run(model, _InProcess(model, wrong=True))
    assert "CHECK FAILED: Sterling bulk labels differ from native torch's" in printed
    assert any(line.startswith("goal NOT met: labels equal native torch's") for line in printed)
    assert results.notes


def test_threaded_clients_counts_every_request_and_failure() -> None:
    calls: list[int] = []

    def single(row: np.ndarray) -> int:
        calls.append(int(row[0]))
        if row[0] == 3:
            raise RuntimeError("refused")
        return 0

    rows = np.arange(10, dtype=np.float32).reshape(10, 1)
    load = threaded_clients(single, rows, clients=3, requests=25)
    assert sorted(calls) == sorted(i % 10 for i in range(25))
    assert load.errors == 3 and len(load.latencies_ms) == 22 and load.achieved_rps > 0


@pytest.mark.slow
def test_a_short_run_against_sterling_up_serves_torch_labels_from_client_processes(model: BenchModel) -> None:
    """The real Sterling path: ``sterling up`` over anvil, the owner's listing over HTTP, concurrent
    clients in two worker processes; every request answered, the labels torch's."""
    sterling = bench_infer.SterlingUp(model, clients=4, processes=2, queries_per_client=20_000)
    try:
        printed: list[str] = []
        results = bench_infer.run(model, sterling, repeats=1, single_requests=20, sterling_single_requests=20, bulk=500, he=False,
                                  clients=4, concurrent_requests=200, threads=1, out=printed.append)  # fmt: skip
    finally:
        sterling.close()
    assert not results.notes, printed
    assert any(line == "goal met    : labels equal native torch's on 1,000 rows" for line in printed), printed
    assert results.figures["sterling_rps"].median > 0 and results.figures["sterling_bulk"].median > 0
    assert re.fullmatch(r"bench-infer: single p50 \d+\.\d\d ms, .*concurrent [\d,]+ req/s p99 \d+\.\d ms", printed[-1]), printed[-1]
