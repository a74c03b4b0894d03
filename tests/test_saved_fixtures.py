"""Files saved by earlier versions still load and predict what they predicted when saved
(fixtures written by tests/fixtures/make_saved_models.py before the package was reorganised)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn as fr

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "saved")
EXPECTED = np.load(os.path.join(HERE, "expected.npz"))


@pytest.mark.parametrize("name,kind,kw", [("sequential", "Sequential", {}), ("seq2seq", "Seq2Seq", {"steps": 3}),
                                          ("jordan", "JordanRNN", {}), ("cli", "Sequential", {})])
def test_saved_model_loads_and_predicts_as_when_saved(name, kind, kw):
    path = os.path.join(HERE, "cli-sine-gru.frnn" if name == "cli" else f"{name}.frnn")
    model = fr.load(path)
    assert type(model).__name__ == kind
    got = model.predict(EXPECTED[f"{name}_x"], **kw)
    want = EXPECTED[f"{name}_y"]
    assert got.shape == want.shape and got.dtype == want.dtype
    # float32 kernels may round differently on a CPU without AVX2/FMA than on the one that
    # wrote the fixtures; float64 models agree far tighter
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 if want.dtype == np.float32 else 1e-12)
    assert fr.load(path, compile=False).optimizer is None


def test_cli_model_file_still_drives_predict(tmp_path):
    csv = tmp_path / "series.csv"
    values = np.sin(np.arange(40) * 0.3)
    csv.write_text("t,value\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    out = tmp_path / "pred.csv"
    subprocess.run([sys.executable, "-m", "fastrnn", "predict", "--model", os.path.join(HERE, "cli-sine-gru.frnn"),
                    "--csv", str(csv), "--output", str(out)], check=True, cwd=tmp_path)
    rows = out.read_text().strip().splitlines()
    assert rows[0].startswith("index,actual,pred_1") and len(rows) > 20
