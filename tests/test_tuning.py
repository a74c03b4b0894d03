"""fastrnn.machine (what the CPU is) and fastrnn.tuning (fr.tune, its cache, applying it)."""
import json
import os
import subprocess
import sys
import warnings

import pytest

import fastrnn as fr
from fastrnn import _core, machine, tuning
from fastrnn.cli import main as cli_main


@pytest.fixture
def knobs_restored():
    before = _core.plan_knobs()
    yield before
    _core.plan_knobs(**before)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRNN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("FASTRNN_NO_TUNE_CACHE", raising=False)
    monkeypatch.delenv("FASTRNN_DEFAULT_PLAN", raising=False)
    return tmp_path


def test_facts_describe_this_machine():
    f = machine.facts()
    assert isinstance(f["model"], str) and f["model"]
    assert f["cpus"] == os.cpu_count() and 1 <= f["usable"] <= f["cpus"]
    assert set(f["flags"]) <= {"avx512f", "avx2", "fma", "asimd", "neon"}
    for k in ("l1d", "l2", "l3"):
        assert f[k] is None or (isinstance(f[k], int) and f[k] >= 1024)
    if os.path.exists("/sys/devices/system/cpu/cpu0/cache/index0/size"):
        assert f["l1d"] and f["l2"] and f["l1d"] < f["l2"]
    key = machine.cpu_key()
    assert key and all(c.isalnum() or c in "._-" for c in key)
    assert machine.cpu_key(dict(f, model="Weird / CPU: (x)")) != key


def test_cache_sizes_parse():
    assert machine._size("32K") == 32768 and machine._size("1024K") == 1 << 20
    assert machine._size("32M") == 32 << 20 and machine._size("512") == 512
    assert machine._size("lots") is None and machine._size(None) is None


@pytest.mark.parametrize("points,current,above,want", [
    ([(1, 1.5), (10, 1.2), (100, 0.9), (1000, 0.8)], tuning.NEVER, True, 32),   # split pays from 100
    ([(1, 1.01), (10, 0.99), (100, 1.0)], 5, True, 5),                          # noise moves nothing
    ([(1, 1.5), (10, 1.2), (100, 1.05)], 2, True, tuning.NEVER),                # a split never pays
    ([(1, 0.8), (2, 0.9), (4, 1.2), (8, 1.5)], 8, False, 3),                    # fusing pays up to 2
    ([(1, 0.8), (2, 0.9)], 1, False, 4),                                        # ... or everywhere
])
def test_the_threshold_minimises_the_measured_time(points, current, above, want):
    assert tuning._choose(points, current, above) == want


def test_derived_thresholds_follow_the_caches():
    # the Zen 3 EPYC plan.c's constants were measured on: 512 KiB L2, 32 MiB L3
    zen3 = dict(machine.facts(), l2=512 << 10, l3=32 << 20)
    assert tuning.derived_knobs(zen3) == {"fused_max_bytes": 8 << 20, "dx_loop_max_bytes": 2 << 20,
                                          "gemv_max_elems": 1 << 18}
    small = tuning.derived_knobs(dict(zen3, l2=256 << 10, l3=8 << 20))
    assert small == {"fused_max_bytes": 2 << 20, "dx_loop_max_bytes": 1 << 20, "gemv_max_elems": 1 << 17}
    f = zen3
    assert tuning.derived_knobs(dict(f, l2=None, l3=None)) == {}


def _plan_file(path, knobs):
    path.write_text(json.dumps({"format": tuning.FORMAT, "knobs": knobs}))


def test_a_cached_plan_is_applied_and_a_broken_one_ignored(cache, knobs_restored):
    path = tuning.cache_path()
    assert os.path.dirname(path) == str(cache) and machine.cpu_key() in os.path.basename(path)
    assert tuning.cached_plan() is None and tuning.apply_cached() is None
    want = {"min_parallel_work": 123456, "unit_min_work": 7890, "cell_split_work": 4242}
    _plan_file(cache / os.path.basename(path), want)
    assert tuning.apply_cached() == want
    assert {k: _core.plan_knobs()[k] for k in want} == want
    _core.plan_knobs(**knobs_restored)
    for bad in ("{not json", json.dumps({"format": 99, "knobs": want}),
                json.dumps({"format": 1, "knobs": {"fused": 1}}),
                json.dumps({"format": 1, "knobs": {"min_parallel_work": -1}}),
                json.dumps({"format": 1, "knobs": {"min_parallel_work": True}}),
                json.dumps({"format": 1, "knobs": {"min_parallel_work": 2 ** 70}}),
                json.dumps({"format": 1, "knobs": {"min_parallel_work": 5, "unit_min_work": "x"}}),
                json.dumps([1, 2])):
        (cache / os.path.basename(path)).write_text(bad)
        with pytest.warns(RuntimeWarning, match="ignoring the tuning cache"):
            assert tuning.apply_cached() is None
        assert _core.plan_knobs() == knobs_restored          # nothing half-applied


def test_import_derives_the_cache_thresholds_unless_told_not_to(cache):
    code = "import fastrnn, json; print(json.dumps(fastrnn._core.plan_knobs()))"
    env = dict(os.environ, FASTRNN_CACHE_DIR=str(cache))
    got = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True, cwd=str(cache)).stdout)
    want = tuning.derived_knobs()
    assert {k: got[k] for k in want} == want
    env["FASTRNN_DEFAULT_PLAN"] = "1"
    got = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True, cwd=str(cache)).stdout)
    assert (got["fused_max_bytes"], got["dx_loop_max_bytes"], got["gemv_max_elems"]) == (8 << 20, 2 << 20, 1 << 18)


def test_import_applies_the_cached_plan_unless_told_not_to(cache):
    want = {"min_parallel_work": 31337, "unit_min_work": 999, "cell_split_work": 77}
    _plan_file(cache / os.path.basename(tuning.cache_path()), want)
    code = "import fastrnn, json; print(json.dumps(fastrnn._core.plan_knobs()))"
    env = dict(os.environ, FASTRNN_CACHE_DIR=str(cache))
    got = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True, cwd=str(cache)).stdout)
    assert {k: got[k] for k in want} == want
    env["FASTRNN_NO_TUNE_CACHE"] = "1"
    got = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True, cwd=str(cache)).stdout)
    assert got["min_parallel_work"] != 31337


def test_tune_measures_saves_atomically_and_applies(cache, knobs_restored, monkeypatch):
    if fr.get_num_threads() < 2:
        pytest.skip("one thread: nothing to tune")
    monkeypatch.setattr(tuning._OtherLoad, "__exit__", lambda self, *e: setattr(self, "share", 0.0))
    r = tuning.tune(seconds=0.5)
    assert set(r["knobs"]) == set(tuning.THRESHOLDS) - {"gemv_max_elems"}
    assert all(len(r["measured"][k]) >= 5 for k in r["knobs"])
    assert all(0 < ratio < 100 for pts in r["measured"].values() for _, ratio in pts)
    assert r["path"] == tuning.cache_path() and tuning.cached_plan() == r["knobs"]
    assert {k: _core.plan_knobs()[k] for k in r["knobs"]} == r["knobs"]
    assert sorted(os.listdir(cache)) == [os.path.basename(r["path"])]      # no temporary debris
    saved = json.loads(open(r["path"]).read())
    assert saved["cpu"]["model"] == machine.facts()["model"] and saved["defaults"] == {
        k: knobs_restored[k] for k in r["knobs"]}


def test_tune_on_a_busy_machine_applies_and_saves_nothing(cache, knobs_restored, monkeypatch):
    if fr.get_num_threads() < 2:
        pytest.skip("one thread: nothing to tune")
    monkeypatch.setattr(tuning._OtherLoad, "__exit__", lambda self, *e: setattr(self, "share", 0.5))
    with pytest.warns(RuntimeWarning, match="50% of the machine"):
        r = tuning.tune(seconds=0.3)
    assert r["path"] is None and r["other_load"] == 0.5 and os.listdir(cache) == []
    assert _core.plan_knobs() == knobs_restored


def test_a_failed_save_leaves_no_file_and_no_debris(cache, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(tuning.json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        tuning._save(tuning.cache_path(), {"format": 1})
    assert os.listdir(cache) == []


@pytest.mark.parametrize("seconds", [0, -1, True, "10", float("nan"), 1e9])
def test_tune_refuses_bad_seconds(seconds):
    with pytest.raises(ValueError, match="seconds"):
        tuning.tune(seconds=seconds)


def test_cli_tune_reports_and_refuses_to_save_a_busy_measurement(cache, knobs_restored, monkeypatch, capsys):
    if fr.get_num_threads() < 2:
        pytest.skip("one thread: nothing to tune")
    monkeypatch.setattr(tuning._OtherLoad, "__exit__", lambda self, *e: setattr(self, "share", 0.0))
    assert cli_main(["tune", "--seconds", "0.3"]) == 0
    out = capsys.readouterr().out
    assert "min_parallel_work" in out and "saved to" in out and os.listdir(cache)
    monkeypatch.setattr(tuning._OtherLoad, "__exit__", lambda self, *e: setattr(self, "share", 0.9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli_main(["tune", "--seconds", "0.3", "--no-save"]) == 0
        assert cli_main(["tune", "--seconds", "0.3"]) == 1
    assert "nothing saved" in capsys.readouterr().err


@pytest.mark.parametrize("B", [1, 7, 13, 32])
def test_the_micro_kernel_tile_changes_speed_not_results(knobs_restored, B):
    """tile_rows (tune() measures it) regroups the rows of each per-step product into tiles of 4,
    5 or 6; every element is the same sum in the same order, so outputs and gradients are the
    same bits (B = 7, 13: remainder tiles of every size; 32: borrowed tiles)."""
    import numpy as np
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, B, 5)).astype(np.float32)
    dy = rng.standard_normal((6, B, 2 * 20)).astype(np.float32)
    got = {}
    for rows in (4, 5, 6):
        _core.plan_knobs(tile_rows=rows, units=False)
        for cls in (fr.LSTM, fr.GRU, fr.RNN):
            m = cls(5, 20, num_layers=2, bidirectional=True, seed=1)
            y, _ = m(x)
            dx, _ = m.backward(dy)
            got.setdefault(cls.__name__, []).append([y, dx] + [g.copy() for g in m.grads.values()])
    for name, runs in got.items():
        for other in runs[1:]:
            for a, b in zip(runs[0], other):
                np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize("rows", [3, 7, -1, True, 4.0])
def test_tile_rows_must_be_4_5_or_6(knobs_restored, rows):
    with pytest.raises(ValueError, match="tile_rows"):
        _core.plan_knobs(tile_rows=rows)
    assert _core.plan_knobs() == knobs_restored


def test_a_cached_plan_with_a_bad_tile_is_refused(tmp_path):
    with pytest.raises(ValueError, match="tile_rows"):
        tuning._check_plan({"format": tuning.FORMAT, "knobs": {"tile_rows": 7}}, "plan.json")
