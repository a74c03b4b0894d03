"""NumPy's own BLAS is held to one thread while fastrnn trains, and restored afterwards."""
import numpy as np
import pytest

import fastrnn as fr
from fastrnn import _numpy_blas

pytestmark = pytest.mark.skipif(_numpy_blas.get_threads() is None,
                                reason="NumPy is not built on a bundled OpenBLAS here")


def test_single_threaded_block_restores_the_previous_count():
    c = _numpy_blas._controls()
    c[1](2)
    try:
        with _numpy_blas.single_threaded():
            assert _numpy_blas.get_threads() == 1
            with _numpy_blas.single_threaded():  # nested
                assert _numpy_blas.get_threads() == 1
            assert _numpy_blas.get_threads() == 1
        assert _numpy_blas.get_threads() == 2
    finally:
        c[1](2)


def test_fit_runs_with_numpy_blas_single_threaded_and_restores_it(monkeypatch):
    c = _numpy_blas._controls()
    c[1](2)
    seen = []
    model = fr.Sequential([fr.GRU(2, 4), fr.Dense(1)], seed=0)
    dense = model.layers[-1]
    forward = dense.forward

    def spy(*a, **k):
        seen.append(_numpy_blas.get_threads())
        return forward(*a, **k)
    monkeypatch.setattr(dense, "forward", spy)
    model.compile(loss="mse", optimizer="adam")
    X = np.zeros((8, 5, 2), np.float32)
    model.fit(X, np.zeros((8, 5, 1), np.float32), epochs=1, batch_size=4, verbose=0)
    model.predict(X)
    assert seen and set(seen) == {1}
    assert _numpy_blas.get_threads() == 2
