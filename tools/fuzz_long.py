"""The long profile of the fuzz suite: tests/test_fuzz.py in batches, each in a subprocess.

    python tools/fuzz_long.py --cases 10000              # >= 10,000 cases, then a summary
    python tools/fuzz_long.py --cases 10000 --minutes 15 # stop starting batches after 15 min
    python tools/fuzz_long.py --batch-examples 20 -k "layer or cell" --jobs 2

Each batch is `python -m pytest tests/test_fuzz.py` with FASTRNN_FUZZ_PROFILE=long, its own
--hypothesis-seed, FASTRNN_FUZZ_EXAMPLES examples per property and FASTRNN_FUZZ_RECORD set, so
the properties record every case's outcome (pass / allowed error / finding and its kind)
instead of stopping at the first finding. A batch that dies on a signal (segfault, abort) or
exceeds --timeout is counted as a crash / hang, with its seed and the case it was running
(FASTRNN_FUZZ_CURRENT). The summary lists cases run, passes, allowed errors, findings by kind
(with a count and the first example) and crashes. Exit status 1 if there was any finding or
crash. Re-run one batch with `--seed S --batches 1`.
"""
import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST = os.path.join(ROOT, "tests", "test_fuzz.py")


def run_batch(i, seed, args, workdir):
    rec = os.path.join(workdir, f"batch{i}.jsonl")
    cur = os.path.join(workdir, f"batch{i}.current")
    env = dict(os.environ, FASTRNN_FUZZ_PROFILE="long", FASTRNN_FUZZ_EXAMPLES=str(args.batch_examples),
               FASTRNN_FUZZ_RECORD=rec, FASTRNN_FUZZ_CURRENT=cur,
               FASTRNN_FUZZ_CASE_TIMEOUT=str(args.case_timeout))
    cmd = [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider",
           f"--hypothesis-seed={seed}", "-W", "ignore"]
    if args.k:
        cmd += ["-k", args.k]
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=args.timeout)
        status = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        status = "timeout"
    return {"batch": i, "seed": seed, "status": status, "seconds": time.time() - t0,
            "output": out.decode(errors="replace"), "record": rec, "current": cur}


def read_jsonl(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10000, help="run batches until this many cases (default 10000)")
    ap.add_argument("--batch-examples", type=int, default=60,
                    help="examples per property per batch (default 60)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the first batch (default: time-based)")
    ap.add_argument("--batches", type=int, default=None, help="at most this many batches")
    ap.add_argument("--minutes", type=float, default=None, help="start no batch after this many minutes")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per batch before it counts as a hang")
    ap.add_argument("--case-timeout", type=float, default=120, help="seconds per case (faulthandler exit)")
    ap.add_argument("--jobs", type=int, default=1, help="batches run at once (default 1)")
    ap.add_argument("-k", default=None, help="pytest -k expression: only these properties")
    ap.add_argument("--keep", default=None, help="directory to keep the batch records in")
    ap.add_argument("--json", default=None, help="also write the summary as JSON here")
    args = ap.parse_args(argv)

    seed0 = args.seed if args.seed is not None else int(time.time()) % 1000000
    workdir = args.keep or tempfile.mkdtemp(prefix="fastrnn-fuzz-long-")
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    counts = collections.Counter()
    kinds = collections.OrderedDict()
    crashes = []
    per_test = collections.defaultdict(collections.Counter)
    batches = []
    i = 0
    running = []

    def harvest(res):
        rows = read_jsonl(res["record"])
        if res["status"] != 0:
            with open(os.path.join(workdir, f"batch{res['batch']}.out"), "w") as f:
                f.write(res["output"])
        for r in rows:
            counts["cases"] += 1
            counts[r["outcome"]] += 1
            per_test[r["test"]][r["outcome"]] += 1
            if r["outcome"] == "finding":
                k = kinds.setdefault(r["kind"], {"count": 0, "first": None})
                k["count"] += 1
                if k["first"] is None:
                    k["first"] = {"batch": res["batch"], "seed": res["seed"], "error": r.get("error"),
                                  "example": r.get("example")}
        st = res["status"]
        bad = st == "timeout" or (isinstance(st, int) and st < 0)
        # pytest exits 1 when a test fails outright (a finding escaped recording) and faulthandler's
        # watchdog exits 1 after a stuck case: look at the output to tell them apart
        if isinstance(st, int) and st not in (0, 5) and not bad:
            bad = "Timeout (" in res["output"] or "Fatal Python error" in res["output"] or st != 1
            if not bad and " failed" in res["output"]:
                crashes.append({"batch": res["batch"], "seed": res["seed"], "kind": "test error (not recorded)",
                                "detail": res["output"][-1500:]})
        if bad:
            cur = None
            if os.path.exists(res["current"]):
                with open(res["current"]) as f:
                    cur = f.read()[:2000]
            kind = ("hang (batch timeout)" if st == "timeout" else
                    f"signal {-st} ({signal.Signals(-st).name})" if isinstance(st, int) and st < 0 else
                    "case timeout (faulthandler)" if "Timeout (" in res["output"] else f"exit status {st}")
            counts["crashes"] += 1
            crashes.append({"batch": res["batch"], "seed": res["seed"], "kind": kind, "case": cur,
                            "detail": res["output"][-1500:]})
        batches.append({k: res[k] for k in ("batch", "seed", "status", "seconds")} | {"cases": len(rows)})
        print(f"batch {res['batch']:3d} seed {res['seed']}: {len(rows)} cases, status {st}, "
              f"{res['seconds']:.0f} s; total {counts['cases']} cases, {counts['finding']} findings, "
              f"{counts['crashes']} crashes", flush=True)

    from concurrent.futures import ThreadPoolExecutor, FIRST_COMPLETED, wait
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        while True:
            done_enough = counts["cases"] >= args.cases
            out_of_time = args.minutes is not None and time.time() - t_start > 60 * args.minutes
            out_of_batches = args.batches is not None and i >= args.batches
            # only start a batch if the ones running cannot already reach the target
            expected = counts["cases"] + len(running) * (sum(b["cases"] for b in batches) / len(batches)
                                                         if batches else 0)
            if not (done_enough or out_of_time or out_of_batches) and len(running) < max(1, args.jobs) \
                    and (not batches or expected < args.cases):
                running.append(pool.submit(run_batch, i, seed0 + i, args, workdir))
                i += 1
                continue
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                running.remove(f)
                harvest(f.result())

    elapsed = time.time() - t_start
    print()
    print("=" * 78)
    print(f"fuzz_long: {len(batches)} batches (seeds {seed0}..{seed0 + i - 1}), {elapsed / 60:.1f} min; "
          f"records in {workdir}")
    print(f"cases run:       {counts['cases']}")
    print(f"passes:          {counts['pass']}")
    print(f"allowed errors:  {counts['allowed']}")
    print(f"findings:        {counts['finding']} ({len(kinds)} kinds)")
    print(f"crashes/hangs:   {counts['crashes']}")
    print()
    print("per property (pass / allowed / finding):")
    for t, c in sorted(per_test.items()):
        print(f"  {t:32s} {c['pass']:6d} {c['allowed']:6d} {c['finding']:6d}")
    if kinds:
        print()
        print("findings by kind (count: kind -- first error; batch/seed; example):")
        for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]["count"]):
            f = v["first"]
            print(f"  {v['count']:5d}: {k}")
            print(f"         {f['error']}")
            print(f"         batch {f['batch']} seed {f['seed']}: {(f['example'] or '')[:400]}")
    if crashes:
        print()
        print("crashes / hangs:")
        for c in crashes:
            print(f"  batch {c['batch']} seed {c['seed']}: {c['kind']}; case {c.get('case')}")
            print("    " + c["detail"][-600:].replace("\n", "\n    "))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cases": counts["cases"], "passes": counts["pass"], "allowed": counts["allowed"],
                       "findings": counts["finding"], "crashes": crashes, "kinds": kinds,
                       "per_test": per_test, "batches": batches}, f, indent=1, default=str)
    return 1 if kinds or crashes else 0


if __name__ == "__main__":
    sys.exit(main())
