"""bench/epoch_vs_torch.py compares like with like."""
import importlib.util
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _bench_module():
    path = os.path.join(HERE, os.pardir, "bench", "epoch_vs_torch.py")
    spec = importlib.util.spec_from_file_location("epoch_vs_torch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("example", ["sine", "classify"])
def test_both_frameworks_train_the_same_architecture(example):
    torch = pytest.importorskip("torch")
    b = _bench_module()
    X, y, lengths, batch = b.make_data(example)
    ours = b.FastrnnRunner(example, X, y, lengths, batch)
    theirs = b.TorchRunner(example, X, y, lengths, batch)
    shapes = sorted(p.shape for p in ours.model.parameters().values())
    assert shapes == sorted(tuple(p.shape) for p in theirs.params)
    # Same weights in both -> same outputs, so the two loops time the same computation.
    ours.model.load_torch_state_dict({**{"0." + k: v for k, v in theirs.rnn.state_dict().items()},
                                      **{f"{len(ours.model.layers) - 1}." + k: v
                                         for k, v in theirs.head.state_dict().items()}})
    theirs.rnn.eval()
    theirs.drop.eval()
    idx = torch.arange(8)
    with torch.no_grad():
        ref = theirs.forward(idx).numpy()
    got = ours.model.predict(X[:8], lengths=None if lengths is None else lengths[:8])
    assert got.shape == ref.shape
    assert abs(got - ref).max() < 1e-4
