"""pytest-benchmark tracking of fastrnn's core cases over time (fastrnn only, one process).

    python -m pytest bench/test_bench_core.py --benchmark-autosave      # then --benchmark-compare

Not part of the test run (pyproject's testpaths is tests/), and never a pass/fail timing test:
the side-by-side comparison with PyTorch and NumPy is bench/run.py.
"""
import os

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
from _impls import FastRNN, case_key, dims, flops, new_case  # noqa: E402

THREADS = int(os.environ.get("OPENBLAS_NUM_THREADS", os.cpu_count()))

CASES = [dict(cell=c, shape=s, mode=m, dtype="float32")
         for c in ("rnn", "gru", "lstm") for s in ("tiny", "medium") for m in ("train", "infer")]
CASES += [dict(cell=c, shape="cell", mode="step", dtype="float32") for c in ("gru", "lstm")]


@pytest.fixture(scope="module")
def fastrnn_impl():
    return FastRNN(THREADS)


@pytest.mark.parametrize("case", CASES, ids=case_key)
def test_core(benchmark, fastrnn_impl, case):
    call = fastrnn_impl.prepare(case, *new_case(case))
    benchmark.group = case["mode"]
    benchmark.extra_info.update(case, threads=THREADS, gflop=flops(case) / 1e9, steps_per_call=dims(case)[0])
    out = benchmark(call)
    assert all(np.isfinite(v).all() for v in out.values())
