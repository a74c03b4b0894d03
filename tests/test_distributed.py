"""Data-parallel training on MPI ranks (fastrnn.distributed) gives the single-process result.

Each case of tests/distributed_worker.py runs alone and under ``mpiexec -n 2`` and ``-n 3``
(3 does not divide the batches, so some ranks get one sample fewer and, in the last batch,
none); the final weights and logs must agree to the tolerance below, and every rank must end
with the same weights as rank 0.

Tolerance. The ranks sum their weighted gradients in another order than one process's GEMMs
do, so results differ by rounding, which the optimizer then carries along for a few dozen
updates. Measured on 2 and 3 ranks (max |diff| / max |value| per array, 3-4 epochs of
Adam, SGD with momentum, RMSprop): float64 <= 5.5e-16, float32 <= 3.3e-7; the ESN readout,
a linear solve with condition number ~1e3, 3.1e-13. We allow 1e-12 (float64) and 2e-5
(float32, ~60x the measured): a wrong gradient average (an unweighted mean of unequal parts,
a missed rank, a shuffle that differs) moves weights by >= 1e-3.

Skipped when mpi4py or mpiexec is missing (the test extra brings both: mpi4py and MPICH).
"""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

mpi4py = pytest.importorskip("mpi4py")
# the MPICH wheel puts mpiexec beside the interpreter, which need not be on PATH
MPIEXEC = next((p for p in (os.path.join(os.path.dirname(sys.executable), "mpiexec"),
                            shutil.which("mpiexec"), shutil.which("mpirun"))
                if p and os.access(p, os.X_OK)), None)
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH")

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
RTOL = {"float64": 1e-12, "float32": 2e-5}


def _env(**extra):
    env = dict(os.environ)
    # the worker must find the package the tests import, installed or in place
    import fastrnn
    root = os.path.dirname(os.path.dirname(fastrnn.__file__))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    for v in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMIX_RANK",
              "MPI_LOCALNRANKS"):
        env.pop(v, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(case, out, ranks=1, dtype="float64", timeout=120, check=True, **env):
    cmd = [sys.executable, WORKER, case, dtype, str(out)]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks)] + cmd
    p = subprocess.run(cmd, env=_env(FR_TEST_RANKS=ranks, **env), capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def load(out):
    with np.load(f"{out}.npz") as f:
        return dict(f)


def rel_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) / max(float(np.max(np.abs(a[k]))), 1e-30)
               for k in a)


def ranks_agree(out, ranks):
    ds = [np.load(f"{out}.rank{r}.npy") for r in range(ranks)]
    for r, d in enumerate(ds[1:], 1):
        assert np.array_equal(d, ds[0]), f"rank {r} ended with other weights than rank 0"


def assert_same_run(tmp_path, case, ranks, dtype, **env):
    one, many = tmp_path / "one", tmp_path / f"n{ranks}"
    one.mkdir(), many.mkdir()
    run(case, one / "r", 1, dtype, **env)
    run(case, many / "r", ranks, dtype, **env)
    a, b = load(one / "r"), load(many / "r")
    assert sorted(a) == sorted(b)
    err = rel_diff(a, b)
    assert err <= RTOL[dtype], f"{case} on {ranks} ranks differs from one process by {err:.3g}"
    ranks_agree(many / "r", ranks)
    return a, b, one, many


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sequential_ragged_equals_one_process(tmp_path, ranks, dtype):
    a, b, one, many = assert_same_run(tmp_path, "seq_ragged", ranks, dtype)
    assert a["epoch"] == b["epoch"] == 4 and a["step"] == b["step"]
    # only rank 0 writes checkpoints and logs; the files equal the single run's
    written = lambda d: sorted(f for f in os.listdir(d) if ".rank" not in f)
    assert written(many) == written(one)
    with open(one / "log.csv") as f1, open(many / "log.csv") as f2:
        l1, l2 = f1.read().splitlines(), f2.read().splitlines()
    assert l1[0] == l2[0] and len(l1) == len(l2) == 5


@pytest.mark.parametrize("ranks", [2, 3])
def test_truncated_bptt_with_sample_weights_equals_one_process(tmp_path, ranks):
    assert_same_run(tmp_path, "seq_tbptt", ranks, "float64")


@pytest.mark.parametrize("ranks", [2, 3])
def test_seq2seq_equals_one_process(tmp_path, ranks):
    a, b, _, _ = assert_same_run(tmp_path, "seq2seq", ranks, "float64")
    assert "h_val_loss" in a


@pytest.mark.parametrize("ranks", [2, 3])
def test_stateful_layers_equal_one_process(tmp_path, ranks):
    assert_same_run(tmp_path, "stateful", ranks, "float64")


def test_per_rank_batches_equal_one_process_with_the_larger_batch(tmp_path):
    """init(batch="per_rank"): batch_size 4 on each of 3 ranks is one process's batch of 12
    (with the global default the 3 ranks would take batches of 4, and differ)."""
    assert_same_run(tmp_path, "per_rank", 3, "float64", FR_TEST_BATCH="per_rank", FR_TEST_GROUP=3)


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("sharded", [False, True])
def test_esn_readout_equals_one_process(tmp_path, ranks, sharded):
    env = {"FR_TEST_SHARDED": "1"} if sharded else {}
    a, b, _, _ = assert_same_run(tmp_path, "esn", ranks, "float64", **env)
    assert a["nrmse"] < 0.5


def test_sharded_data_and_an_unseeded_model_keep_the_ranks_equal(tmp_path):
    run("sharded", tmp_path / "r", 3)
    ranks_agree(tmp_path / "r", 3)
    h = load(tmp_path / "r")
    assert h["h_loss"][-1] < h["h_loss"][0]
    assert np.isfinite(h["h_val_loss"]).all()


def test_resume_from_a_checkpoint_on_another_number_of_ranks(tmp_path):
    """2 ranks train and save; 1 process and 3 ranks continue from that file alike."""
    (tmp_path / "first").mkdir()
    run("seq_ragged", tmp_path / "first" / "r", 2)
    ckpt = tmp_path / "first" / "r.frnn"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    run("resume", tmp_path / "a" / "r", 1, FR_TEST_CKPT=ckpt)
    run("resume", tmp_path / "b" / "r", 3, FR_TEST_CKPT=ckpt)
    a, b = load(tmp_path / "a" / "r"), load(tmp_path / "b" / "r")
    assert a["epoch"] == b["epoch"] == 6
    assert rel_diff(a, b) <= RTOL["float64"]
    ranks_agree(tmp_path / "b" / "r", 3)


@pytest.mark.parametrize("bad", [1, -1])
def test_a_rank_that_raises_ends_every_rank_promptly_and_says_so_once(tmp_path, bad):
    t0 = time.perf_counter()
    p = run("fault", tmp_path / "r", 3, check=False, timeout=60, FR_TEST_BAD_RANK=bad)
    dt = time.perf_counter() - t0
    assert p.returncode != 0
    assert dt < 30, f"the job took {dt:.0f} s to end"     # a hang guard, not a timing
    assert p.stderr.count("RuntimeError: boom") == 1, p.stderr
    assert f"rank {max(bad, 0)} of 3 raised" in p.stderr


def test_a_rank_killed_by_a_signal_ends_the_job(tmp_path):
    t0 = time.perf_counter()
    p = run("killed", tmp_path / "r", 2, check=False, timeout=60)
    assert p.returncode != 0
    assert time.perf_counter() - t0 < 30        # a hang guard, not a timing
    assert not os.path.exists(f"{tmp_path / 'r'}.npz")


def test_ranks_with_different_data_are_refused_on_every_rank(tmp_path):
    p = run("disagree", tmp_path / "r", 2, check=False, timeout=60)
    assert p.returncode != 0
    assert "the ranks disagree on the number of training samples" in p.stderr
    assert "sharded=True" in p.stderr


def test_threads_per_rank_share_the_node(tmp_path):
    run("threads", tmp_path / "r", 2)
    t = load(tmp_path / "r")
    assert t["threads"] == max(1, int(t["cpus"]) // 2)


def test_alone_init_is_a_no_op_that_never_imports_mpi4py(tmp_path):
    code = ("import sys, fastrnn as fr; n = fr.distributed.init(); "
            "assert n == 1 and fr.distributed.size() == 1 and fr.distributed.is_main(); "
            "fr.distributed.barrier(); assert 'mpi4py' not in sys.modules; print('ok')")
    # cwd: not the checkout, whose uncompiled fastrnn/ would shadow the installed package
    p = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                       cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr


def test_a_slurm_batch_script_without_srun_runs_alone_without_mpi4py(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None; import fastrnn as fr; "
            "print(fr.distributed.init(), fr.distributed.size())")
    p = subprocess.run([sys.executable, "-c", code], env=_env(SLURM_NTASKS=32, SLURM_PROCID=0),
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.split() == ["1", "1"], p.stderr


def test_a_launcher_without_mpi4py_gets_an_install_hint(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None; import fastrnn as fr\n"
            "try:\n    fr.distributed.init()\nexcept ImportError as e:\n    print(e)")
    p = subprocess.run([sys.executable, "-c", code], env=_env(PMI_SIZE=4, PMI_RANK=0),
                       capture_output=True, text=True, cwd=tmp_path)
    assert "fastrnn[mpi]" in p.stdout and "4 processes" in p.stdout, p.stdout + p.stderr


def test_sharded_fit_alone_is_refused():
    import fastrnn as fr
    m = fr.Sequential([fr.RNN(2, 3), fr.LastStep(), fr.Dense(1)], seed=0)
    m.compile("mse", "sgd")
    with pytest.raises(ValueError, match="sharded=True"):
        m.fit(np.zeros((4, 3, 2), np.float32), np.zeros((4, 1)), verbose=0, sharded=True)


def test_init_refuses_bad_arguments():
    import fastrnn as fr
    with pytest.raises(ValueError, match="batch"):
        fr.distributed.init(batch="local")
    with pytest.raises(TypeError, match="mpi4py communicator"):
        fr.distributed.init(comm=object())


def test_the_readme_cluster_script_runs_as_written_alone_and_on_two_ranks(tmp_path):
    import re
    import fastrnn as fr
    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md"), encoding="utf-8").read()
    section = readme[readme.index("## Training on a cluster (MPI)"):]
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    for name, ranks in (("one", 1), ("two", 2)):
        d = tmp_path / name
        d.mkdir()
        (d / "train.py").write_text(script, encoding="utf-8")
        cmd = [sys.executable, "train.py"]
        p = subprocess.run(([MPIEXEC, "-n", "2"] if ranks > 1 else []) + cmd, cwd=d, env=_env(),
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        assert f"{ranks} rank(s): val_loss" in p.stdout and p.stdout.count("Epoch 5:") == 1
    a = fr.load(tmp_path / "one" / "best.frnn").state_dict()
    b = fr.load(tmp_path / "two" / "best.frnn").state_dict()
    assert rel_diff(a, b) <= RTOL["float32"]
