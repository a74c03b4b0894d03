"""Shared plumbing of the examples: command line (--quick, --out, --seed), timing, plotting.

Every example exposes ``main(argv=None) -> dict`` of its metrics; ``--quick`` shrinks it to
seconds (the test suite runs that), and the PNG is skipped with a note when matplotlib is
missing (``pip install 'fastrnn[plot]'``).
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))



def parser(doc):
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    p.add_argument("--out", default=None,
                   help="PNG path (default: examples/<name>.png; 'none' to skip the plot)")
    p.add_argument("--seed", type=int, default=0)
    return p


def pyplot():
    """matplotlib.pyplot with a file-only backend, or None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig_fn, out, default_name):
    """Call ``fig_fn(plt) -> figure`` and save it; returns the path or None (and says why)."""
    if out is not None and out.lower() == "none":
        return None
    plt = pyplot()
    if plt is None:
        print("(matplotlib not installed: no plot; pip install 'fastrnn[plot]')")
        return None
    path = out or os.path.join(HERE, default_name)
    fig = fig_fn(plt)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot saved to {path}")
    return path


def save_curves(curves, ylabel, title, out, default_name, chance=None):
    """Per-epoch curves ({label: values}), one line each, saved like save_figure."""
    def fig(plt):
        f, ax = plt.subplots(figsize=(7, 4))
        for name, values in curves.items():
            ax.plot(np.arange(1, len(values) + 1), values, "o-", ms=3, label=name)
        if chance is not None:
            ax.axhline(chance, color="grey", ls=":", label="chance")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        return f
    return save_figure(fig, out, default_name)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def run(main):
    """Entry point for ``python examples/x.py``."""
    sys.exit(0 if main() is not None else 1)
