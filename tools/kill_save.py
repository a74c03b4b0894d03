"""Crash-safety proof for model files: SIGKILL a process at random points of ``model.save``.

A child process loads a model and saves versions k, k+1, k+2, ... of it (every weight is
base + k) to one file as fast as it can; the parent kills it with SIGKILL after a random delay
of up to a few save durations, so kills land anywhere in a save (writing the temporary file,
fsync, rename, directory sync) or between saves. After every kill the file must load with
``fr.load``, hold one complete version (every array base + k, never older than the last version
seen) and predict exactly what that version predicts. At the end one more normal save must
leave no temporary file behind (the killed writers' ones included).

    python tools/kill_save.py [--kills 60] [--hidden 1024] [--seed 0] [--dir DIR] [--keep]

Prints ``kills=N loads_ok=N ... debris_after_next_save=0`` and exits 0 when every check held.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fastrnn as fr  # noqa: E402

NAME = "model.frnn"
TMP = re.compile(r"\." + re.escape(NAME) + r"\.(\d+)\.[0-9a-f]{8}\.fastrnn-tmp\Z")


def set_version(model, base, k):
    for name, p in model.parameters().items():
        p[...] = base[name] + np.float32(k)


def version_of(model, base):
    name = next(iter(base))
    return int(round(float(model.parameters()[name].flat[0] - base[name].flat[0])))


def child(base_path, target, start):
    """Save versions start, start+1, ... of the model in base_path to target until killed."""
    model = fr.load(base_path)
    base = {k: v.copy() for k, v in model.parameters().items()}
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    k = start
    while True:
        set_version(model, base, k)
        model.save(target)
        k += 1


def temps(d):
    return sorted(f for f in os.listdir(d) if TMP.match(f))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=1024, help="LSTM width (1024: a ~50 MB file)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", default=None, help="where to write (default: a new temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the directory")
    ap.add_argument("--child", nargs=3, metavar=("BASE", "TARGET", "START"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0

    d = args.dir or tempfile.mkdtemp(prefix="kill_save-")
    os.makedirs(d, exist_ok=True)
    work = os.path.join(d, "work")
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    model = fr.Sequential([fr.LSTM(16, args.hidden), fr.LastStep(), fr.Dense(4)], seed=args.seed)
    model.compile("mse", "adam")
    X = rng.standard_normal((4, 5, 16)).astype(np.float32)
    model.fit(X, np.zeros((4, 4), np.float32), epochs=1, verbose=0)     # Adam slots: a bigger file
    base_path = os.path.join(d, "base.frnn")
    model.save(base_path)
    base = {k: v.copy() for k, v in fr.load(base_path).parameters().items()}
    target = os.path.join(work, NAME)
    set_version(model, base, 0)
    model.save(target)
    t = time.perf_counter()
    for _ in range(3):
        model.save(target)
    save_s = (time.perf_counter() - t) / 3
    print(f"model: {model.count_params():,} parameters, file {os.path.getsize(target) / 2**20:.1f} MiB, "
          f"save {save_s * 1e3:.0f} ms; killing at U(0, {2.5 * save_s * 1e3:.0f} ms) after the child is ready")

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    last, loads_ok, mid_write, max_debris, advanced, problems = 0, 0, 0, 0, 0, []
    for i in range(args.kills):
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", base_path, target, str(last + 1)],
                             stdout=subprocess.PIPE, env=env)
        if p.stdout.readline().strip() != b"ready":
            p.kill()
            p.wait()
            problems.append(f"kill {i}: child did not start")
            continue
        time.sleep(rng.uniform(0, 2.5 * save_s))
        p.send_signal(signal.SIGKILL)
        p.wait()                                  # reaped: its pid is gone, its temp file stale
        p.stdout.close()
        debris = temps(work)
        mid_write += any(int(TMP.match(f).group(1)) == p.pid for f in debris)
        max_debris = max(max_debris, len(debris))
        try:
            loaded = fr.load(target)
            k = version_of(loaded, base)
            set_version(model, base, k)
            same = all(np.array_equal(a, model.parameters()[n]) for n, a in loaded.parameters().items())
            same = same and np.array_equal(loaded.predict(X), model.predict(X))
            if k < last:
                problems.append(f"kill {i}: version went back from {last} to {k}")
            elif not same:
                problems.append(f"kill {i}: file holds a mix of versions or predicts differently")
            else:
                loads_ok += 1
                advanced += k > last
                last = k
        except Exception as e:  # noqa: BLE001 -- every failure is a finding
            problems.append(f"kill {i}: {type(e).__name__}: {e}")
    set_version(model, base, last + 1)
    model.save(target)                            # one more normal save clears the debris
    left = sorted(set(os.listdir(work)) - {NAME})
    ok = fr.load(target) is not None and version_of(fr.load(target), base) == last + 1
    for msg in problems:
        print(msg)
    print(f"kills={args.kills} loads_ok={loads_ok} killed_mid_write={mid_write} versions_advanced={advanced} "
          f"max_debris_between_saves={max_debris} debris_after_next_save={len(left)}")
    if not args.keep and not args.dir:
        shutil.rmtree(d, ignore_errors=True)
    return 0 if (loads_ok == args.kills and not left and ok and not problems) else 1


if __name__ == "__main__":
    sys.exit(main())
