"""Cell variants: fastrnn's fused option vs PyTorch's way to get the same thing, one training
step (forward + backward of the sum of the outputs) at the medium shape.

    python bench/variants_torch.py [--rounds 9] [--cells lstm,gru] [--threads N]

PyTorch has none of these options on nn.LSTM/nn.GRU except proj_size, so its way is what users
write (pytorch#9572, #6760, #630; AWD-LSTM's weight drop):
    recurrent dropout, zoneout, peepholes, layer norm: a TorchScript loop over LSTMCell/GRUCell
        (or over the cell's maths where the cell cannot express it), the input projection
        hoisted out of the loop where the variant allows;
    weight dropout: nn.LSTM/nn.GRU through torch.func.functional_call with W_hh * mask;
    proj_size: nn.LSTM(proj_size=...), native.
Each framework runs in its own worker process (neither one's idle BLAS/OpenMP threads steal
cores from the other); the driver alternates them round by round and reports the median round.
Options fastrnn does not have (yet) are listed as "not in this build".
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _impls import cpu_model  # noqa: E402  (lscpu's model name for the table headers)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHAPE = (100, 64, 32, 128)  # T, B, D, H: bench/_impls.py's "medium"
P_REC, P_ZONE, P_WEIGHT, PROJ = 0.25, 0.1, 0.3, 64
OPTIONS = {  # name: (fastrnn keyword arguments, cells it applies to)
    "plain": ({}, ("lstm", "gru")),
    "recurrent_dropout": ({"recurrent_dropout": P_REC}, ("lstm", "gru")),
    "zoneout": ({"zoneout": P_ZONE}, ("lstm", "gru")),
    "weight_dropout": ({"weight_dropout": P_WEIGHT}, ("lstm", "gru")),
    "peepholes": ({"peepholes": True}, ("lstm",)),
    "layer_norm": ({"layer_norm": True}, ("lstm", "gru")),
    "proj_size": ({"proj_size": PROJ}, ("lstm",)),
}


# ----------------------------------------------------------------------------- fastrnn worker
def fastrnn_step(cell, option, x):
    sys.path.insert(0, ROOT)
    import fastrnn as fr
    kw = OPTIONS[option][0]
    T, B, D, H = SHAPE
    try:
        m = {"lstm": fr.LSTM, "gru": fr.GRU}[cell](D, H, seed=0, dtype=np.float32, **kw)
    except TypeError:
        return None                                  # the option does not exist in this build
    m.train()
    y = m(x)[0]
    dy = np.ones_like(y)

    def step():
        m(x)
        m.backward(dy)
    return step


# ----------------------------------------------------------------------------- torch worker
def torch_modules():
    import torch
    from torch import nn

    class RecDropLSTM(nn.Module):
        def __init__(self, D, H):
            super().__init__()
            self.cell = nn.LSTMCell(D, H)

        def forward(self, x, mask):
            B, H = x.size(1), self.cell.hidden_size
            h = torch.zeros(B, H)
            c = torch.zeros(B, H)
            out = []
            for t in range(x.size(0)):
                h, c = self.cell(x[t], (h * mask, c))
                out.append(h)
            return torch.stack(out)

    class RecDropGRU(nn.Module):
        def __init__(self, D, H):
            super().__init__()
            self.cell = nn.GRUCell(D, H)

        def forward(self, x, mask):
            h = torch.zeros(x.size(1), self.cell.hidden_size)
            out = []
            for t in range(x.size(0)):
                h = self.cell(x[t], h * mask)
                out.append(h)
            return torch.stack(out)

    class ZoneoutLSTM(nn.Module):
        def __init__(self, D, H):
            super().__init__()
            self.cell = nn.LSTMCell(D, H)

        def forward(self, x, zh, zc):
            B, H = x.size(1), self.cell.hidden_size
            h = torch.zeros(B, H)
            c = torch.zeros(B, H)
            out = []
            for t in range(x.size(0)):
                h2, c2 = self.cell(x[t], (h, c))
                h = zh[t] * h + (1 - zh[t]) * h2
                c = zc[t] * c + (1 - zc[t]) * c2
                out.append(h)
            return torch.stack(out)

    class ZoneoutGRU(nn.Module):
        def __init__(self, D, H):
            super().__init__()
            self.cell = nn.GRUCell(D, H)

        def forward(self, x, zh):
            h = torch.zeros(x.size(1), self.cell.hidden_size)
            out = []
            for t in range(x.size(0)):
                h2 = self.cell(x[t], h)
                h = zh[t] * h + (1 - zh[t]) * h2
                out.append(h)
            return torch.stack(out)

    class PeepholeLSTM(nn.Module):
        """ONNX's peephole LSTM: i, f see c_{t-1}; o sees c_t. Input projection hoisted."""

        def __init__(self, D, H):
            super().__init__()
            self.ih = nn.Linear(D, 4 * H)
            self.hh = nn.Linear(H, 4 * H, bias=False)
            self.p = nn.Parameter(torch.randn(3, H) * 0.1)

        def forward(self, x):
            T, B = x.size(0), x.size(1)
            H = self.hh.in_features
            xw = self.ih(x)
            h = torch.zeros(B, H)
            c = torch.zeros(B, H)
            out = []
            for t in range(T):
                i, f, g, o = (xw[t] + self.hh(h)).chunk(4, 1)
                i = torch.sigmoid(i + self.p[0] * c)
                f = torch.sigmoid(f + self.p[1] * c)
                c = f * c + i * torch.tanh(g)
                o = torch.sigmoid(o + self.p[2] * c)
                h = o * torch.tanh(c)
                out.append(h)
            return torch.stack(out)

    class LayerNormLSTM(nn.Module):
        """haste's LayerNormLSTM: LN of the input and recurrent projections and of c."""

        def __init__(self, D, H):
            super().__init__()
            self.ih = nn.Linear(D, 4 * H, bias=False)
            self.hh = nn.Linear(H, 4 * H)
            self.ln_x, self.ln_h, self.ln_c = nn.LayerNorm(4 * H), nn.LayerNorm(4 * H), nn.LayerNorm(H)

        def forward(self, x):
            T, B = x.size(0), x.size(1)
            H = self.hh.in_features
            xw = self.ln_x(self.ih(x))
            h = torch.zeros(B, H)
            c = torch.zeros(B, H)
            out = []
            for t in range(T):
                i, f, g, o = (xw[t] + self.ln_h(self.hh(h))).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
                out.append(h)
            return torch.stack(out)

    class LayerNormGRU(nn.Module):
        """LN of the input and recurrent projections (b_hn stays inside r * (...))."""

        def __init__(self, D, H):
            super().__init__()
            self.ih = nn.Linear(D, 3 * H)
            self.hh = nn.Linear(H, 3 * H)
            self.ln_x, self.ln_h = nn.LayerNorm(3 * H), nn.LayerNorm(3 * H)

        def forward(self, x):
            T, B = x.size(0), x.size(1)
            H = self.hh.in_features
            xw = self.ln_x(self.ih(x))
            h = torch.zeros(B, H)
            out = []
            for t in range(T):
                xr, xz, xn = xw[t].chunk(3, 1)
                hr, hz, hn = self.ln_h(self.hh(h)).chunk(3, 1)
                r = torch.sigmoid(xr + hr)
                z = torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
                out.append(h)
            return torch.stack(out)

    return dict(RecDropLSTM=RecDropLSTM, RecDropGRU=RecDropGRU, ZoneoutLSTM=ZoneoutLSTM,
                ZoneoutGRU=ZoneoutGRU, PeepholeLSTM=PeepholeLSTM, LayerNormLSTM=LayerNormLSTM,
                LayerNormGRU=LayerNormGRU)


def torch_step(cell, option, x_np):
    import torch
    from torch import nn
    mods = torch_modules()
    T, B, D, H = SHAPE
    torch.manual_seed(0)
    x = torch.from_numpy(x_np)
    Cell = cell.upper()
    script = torch.jit.script
    if option == "plain":
        m = getattr(nn, Cell)(D, H)
        run = lambda: m(x)[0]  # noqa: E731
    elif option == "proj_size":
        m = nn.LSTM(D, H, proj_size=PROJ)
        run = lambda: m(x)[0]  # noqa: E731
    elif option == "weight_dropout":
        m = getattr(nn, Cell)(D, H)
        names = dict(m.named_parameters())

        def run():
            keep = (torch.rand_like(names["weight_hh_l0"]) >= P_WEIGHT).to(x.dtype) / (1 - P_WEIGHT)
            return torch.func.functional_call(m, {**names, "weight_hh_l0": names["weight_hh_l0"] * keep}, (x,))[0]
    elif option == "recurrent_dropout":
        m = script(mods["RecDrop" + Cell](D, H))

        def run():
            mask = (torch.rand(B, H) >= P_REC).to(x.dtype) / (1 - P_REC)
            return m(x, mask)
    elif option == "zoneout":
        m = script(mods["Zoneout" + Cell](D, H))

        def run():
            zh = (torch.rand(T, B, H) < P_ZONE).to(x.dtype)
            if cell == "lstm":
                return m(x, zh, (torch.rand(T, B, H) < P_ZONE).to(x.dtype))
            return m(x, zh)
    elif option == "peepholes":
        m = script(mods["PeepholeLSTM"](D, H))
        run = lambda: m(x)  # noqa: E731
    elif option == "layer_norm":
        m = script(mods["LayerNorm" + Cell](D, H))
        run = lambda: m(x)  # noqa: E731
    else:
        raise ValueError(option)
    m.train()

    def step():
        m.zero_grad(set_to_none=False)
        run().sum().backward()
    return step


# ----------------------------------------------------------------------------- worker / driver
def serve(impl, threads):
    if impl == "torch":
        import warnings

        import torch
        torch.set_num_threads(threads)
        # nn.LSTM(proj_size=...) says oneDNN lacks projections; that is PyTorch's way, timed as is
        warnings.filterwarnings("ignore", message="LSTM with projections")
    else:
        sys.path.insert(0, ROOT)
        import fastrnn as fr
        fr.set_num_threads(threads)
    T, B, D, H = SHAPE
    x = np.random.default_rng(1).standard_normal((T, B, D)).astype(np.float32)
    steps = {}
    for line in sys.stdin:
        req = json.loads(line)
        key = (req["cell"], req["option"])
        if key not in steps:
            steps[key] = (torch_step if impl == "torch" else fastrnn_step)(*key, x)
            if steps[key] is not None:
                for _ in range(3):         # warm-up: scripting, buffers, pages
                    steps[key]()
        f = steps[key]
        if f is None:
            print(json.dumps({"t": None}), flush=True)
            continue
        t0 = time.perf_counter()
        for _ in range(req["reps"]):
            f()
        print(json.dumps({"t": (time.perf_counter() - t0) / req["reps"]}), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--reps", type=int, default=3, help="steps per round")
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--options", default=",".join(OPTIONS))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--serve", choices=("fastrnn", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args.serve, args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    workers = {n: subprocess.Popen([sys.executable, __file__, "--serve", n, "--threads", str(args.threads)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
               for n in ("fastrnn", "torch")}

    def ask(n, cell, option, reps):
        workers[n].stdin.write(json.dumps({"cell": cell, "option": option, "reps": reps}) + "\n")
        workers[n].stdin.flush()
        return json.loads(workers[n].stdout.readline())["t"]

    T, B, D, H = SHAPE
    print(f"# training step (forward + backward), T={T} B={B} D={D} H={H}, float32, {args.threads} "
          f"threads, median of {args.rounds} alternating rounds of {args.reps} steps; CPU: {cpu_model()}")
    print("| cell | option | fastrnn ms | vs fastrnn plain | PyTorch's way | PyTorch ms | fastrnn speed-up |")
    print("|---|---|---:|---:|---|---:|---:|")
    way = {"plain": "nn.{C}", "proj_size": "nn.LSTM(proj_size=64)", "weight_dropout": "functional_call, W_hh*mask",
           "recurrent_dropout": "scripted {C}Cell loop", "zoneout": "scripted {C}Cell loop",
           "peepholes": "scripted cell loop", "layer_norm": "scripted cell loop"}
    try:
        for cell in args.cells.split(","):
            opts = [o for o in args.options.split(",") if o in OPTIONS and cell in OPTIONS[o][1]]
            times = {(n, o): [] for n in workers for o in opts}
            for r in range(args.rounds):
                for o in opts:
                    order = ("fastrnn", "torch") if r % 2 == 0 else ("torch", "fastrnn")
                    for n in order:
                        times[n, o].append(ask(n, cell, o, args.reps))
            med = {k: (None if None in v else statistics.median(v)) for k, v in times.items()}
            plain = med["fastrnn", "plain"]
            for o in opts:
                f, t = med["fastrnn", o], med["torch", o]
                fs = "not in this build" if f is None else f"{f * 1e3:.2f}"
                rel = "-" if f is None or plain is None else f"{f / plain:.2f}"
                sp = "-" if f is None else f"{t / f:.2f}x"
                print(f"| {cell.upper()} | {o} | {fs} | {rel} | {way[o].format(C=cell.upper())} | "
                      f"{t * 1e3:.2f} | {sp} |", flush=True)
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()


if __name__ == "__main__":
    main()
