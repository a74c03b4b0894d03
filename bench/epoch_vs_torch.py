"""Time per training epoch: the README's two examples (README, "Training models") in fastrnn
(`model.fit`) next to the same model, data, batch size and optimizer in PyTorch (a plain
training loop; packed sequences for the ragged classifier), measured side by side.

    python bench/epoch_vs_torch.py                  # both examples, 9 rounds (~1 min)
    python bench/epoch_vs_torch.py --example sine --rounds 3 --threads 2

Each framework runs in its own worker process (so neither one's idle BLAS/OpenMP threads
steal cores from the other); the driver alternates them epoch by epoch (A B A B ...) and
reports the median epoch time per framework and the final training loss of each.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

EXAMPLES = {
    # The two models of the README's "Training models" section, on the same synthetic data.
    "sine": "forecaster: LSTM(1->32) -> Dense(1) per step, MSE, Adam(0.01, clipnorm=1), 800 windows x 40 steps, batch 32",
    "classify": "classifier: bidirectional GRU(3->32), final states -> Dropout(0.1) -> Dense(2), cross-entropy, "
                "Adam(0.001), 1600 ragged sequences (5..30 steps), batch 64",
}


def make_data(example):
    """Exactly the README's data (training part)."""
    if example == "sine":
        rng = np.random.default_rng(0)
        t = np.arange(41)
        wave = np.sin(rng.uniform(0.05, 0.3, (1000, 1)) * t + rng.uniform(0, 2 * np.pi, (1000, 1)))
        X, Y = wave[:, :-1, None].astype(np.float32), wave[:, 1:, None].astype(np.float32)
        return X[:800], Y[:800], None, 32
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2000, 30, 3)).astype(np.float32)
    lengths = rng.integers(5, 31, 2000)
    y = np.array([X[i, :n, 0].sum() > 0 for i, n in enumerate(lengths)]).astype(np.int64)
    return X[:1600], y[:1600], lengths[:1600], 64


class FastrnnRunner:
    def __init__(self, example, X, y, lengths, batch):
        sys.path.insert(0, ROOT)
        import fastrnn as fr
        self.version = fr.__version__
        if example == "sine":
            self.model = fr.Sequential([fr.LSTM(1, 32), fr.Dense(1)], seed=0)
            self.model.compile(loss="mse", optimizer=fr.Adam(0.01, clipnorm=1.0))
        else:
            self.model = fr.Sequential([
                fr.Recurrent(fr.GRU(3, 32, bidirectional=True), return_sequences=False, merge_mode="concat"),
                fr.Dropout(0.1), fr.Dense(2)], seed=0)
            self.model.compile(loss="cross_entropy", optimizer="adam")
        self.X, self.y, self.lengths, self.batch = X, y, lengths, batch

    def epoch(self):
        h = self.model.fit(self.X, self.y, epochs=1, batch_size=self.batch, lengths=self.lengths, verbose=0)
        return h.history["loss"][-1]


class TorchRunner:
    def __init__(self, example, X, y, lengths, batch):
        import torch
        self.torch, self.example = torch, example
        self.version = torch.__version__
        torch.manual_seed(0)
        nn = torch.nn
        if example == "sine":
            self.rnn, self.head = nn.LSTM(1, 32, batch_first=True), nn.Linear(32, 1)
            self.lossf, lr, self.clip = nn.MSELoss(), 0.01, 1.0
        else:
            self.rnn, self.head = nn.GRU(3, 32, batch_first=True, bidirectional=True), nn.Linear(64, 2)
            self.lossf, lr, self.clip = nn.CrossEntropyLoss(), 0.001, None
        self.drop = nn.Dropout(0.1)
        self.params = list(self.rnn.parameters()) + list(self.head.parameters())
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.X, self.y, self.batch = torch.from_numpy(X), torch.from_numpy(y), batch
        self.lengths = None if lengths is None else torch.from_numpy(lengths)
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, idx):
        torch = self.torch
        if self.example == "sine":
            return self.head(self.rnn(self.X[idx])[0])
        packed = torch.nn.utils.rnn.pack_padded_sequence(self.X[idx], self.lengths[idx], batch_first=True,
                                                         enforce_sorted=False)
        h_n = self.rnn(packed)[1]                       # (2, B, 32): final state per direction
        return self.head(self.drop(torch.cat([h_n[0], h_n[1]], -1)))

    def epoch(self):
        torch = self.torch
        n = len(self.X)
        order = torch.randperm(n, generator=self.gen)
        total = 0.0
        for i in range(0, n, self.batch):
            idx = order[i:i + self.batch]
            self.opt.zero_grad()
            loss = self.lossf(self.forward(idx), self.y[idx])
            loss.backward()
            if self.clip:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.opt.step()
            total += loss.item() * len(idx)
        return total / n


def serve(name, example, threads):
    """Worker: build the model, then run one epoch per request line, reply with JSON."""
    X, y, lengths, batch = make_data(example)
    if name == "torch":
        import torch
        torch.set_num_threads(threads)
        runner = TorchRunner(example, X, y, lengths, batch)
    else:
        runner = FastrnnRunner(example, X, y, lengths, batch)
    runner.epoch()          # warm-up (allocations, thread pools), not timed
    print(json.dumps({"version": runner.version}), flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        loss = runner.epoch()
        print(json.dumps({"seconds": time.perf_counter() - t0, "loss": loss}), flush=True)


def thread_env(threads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def compare(example, rounds, threads):
    procs, versions = {}, {}
    for name in ("fastrnn", "torch"):
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", name,
                              "--example", example, "--threads", str(threads)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=thread_env(threads))
        procs[name] = p
        versions[name] = json.loads(p.stdout.readline())["version"]
    times = {n: [] for n in procs}
    losses = {}
    try:
        for _ in range(rounds):
            for name, p in procs.items():
                time.sleep(0.05)        # let the other worker's threads go idle
                p.stdin.write("epoch\n")
                p.stdin.flush()
                reply = json.loads(p.stdout.readline())
                times[name].append(reply["seconds"])
                losses[name] = reply["loss"]
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    return times, losses, versions


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", choices=sorted(EXAMPLES) + ["all"], default="all")
    ap.add_argument("--rounds", type=int, default=9, help="epochs per framework (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--serve", choices=["fastrnn", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.example, args.threads)
        return
    examples = sorted(EXAMPLES) if args.example == "all" else [args.example]
    print(f"time per epoch, median of {args.rounds} alternating epochs after one warm-up epoch, "
          f"{args.threads} threads, float32; machine load (1/5/15 min): {os.getloadavg()}")
    print(f"{'example':<10} {'fastrnn':>12} {'PyTorch':>12} {'speed-up':>9}   final loss fastrnn / torch")
    for ex in examples:
        times, losses, versions = compare(ex, args.rounds, args.threads)
        f, t = statistics.median(times["fastrnn"]), statistics.median(times["torch"])
        print(f"{ex:<10} {1e3 * f:>9.1f} ms {1e3 * t:>9.1f} ms {t / f:>8.2f}x   "
              f"{losses['fastrnn']:.4f} / {losses['torch']:.4f}")
        print(f"           {EXAMPLES[ex]}")
    print(f"fastrnn {versions['fastrnn']}, torch {versions['torch']}; load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
