"""Data-parallel training on MPI (mpi4py over the MPI the machine has).

The same script runs alone (``python train.py``) and on N processes (``mpiexec -n N python
train.py``, ``srun python train.py``)::

    fr.distributed.init()      # joins MPI.COMM_WORLD under a launcher; a no-op alone
    model.fit(X, y, batch_size=256, ...)

What ``fit`` does on N ranks (see ``Model.fit`` and ``DataParallel`` below):

- ``batch_size`` is the *global* batch. Each rank takes its contiguous 1/N of every batch
  (``np.array_split``), computes the gradient of its part, and one ``Allreduce`` per optimizer
  step over one flat buffer sums ``W_r * grad_r`` together with ``W_r * loss_r`` and ``W_r``
  (``W_r``: the rank's total loss weight -- positions, masks and sample weights), so the
  average is the single-process gradient of the whole batch, to rounding. Every rank then
  applies the same update. ``init(batch="per_rank")`` gives Horovod/DDP semantics instead
  (``batch_size`` per rank, the global batch N times larger).
- The shuffle comes from the model's generator, whose state rank 0 broadcasts at the start of
  ``fit`` together with the parameters, the optimizer state and the counters; so a seeded run
  makes the same permutation as a single process, and a model loaded from a file on rank 0
  only is enough. Per-sample randomness (dropout masks, scheduled sampling) comes from a
  stream per rank and epoch.
- ``fit(..., sharded=True)``: each rank passes its own part of the data instead of all of it.
- Logs (training loss, metrics, validation) are reduced over all ranks, so callbacks see the
  same values everywhere and ``EarlyStopping`` stops every rank at the same epoch. Only rank 0
  shows progress, writes checkpoints and CSV logs.
- A rank whose script raises prints its error and aborts the whole job (``MPI.Abort``), so the
  other ranks never wait forever in a collective.

Alone (no launcher, or ``init`` never called) everything here is a no-op and mpi4py is never
imported: it is an optional dependency (extra ``fastrnn[mpi]``).
"""
import os
import sys
import threading
import time
import traceback

import numpy as np

from .layers import set_num_threads

__all__ = ["init", "is_initialized", "rank", "size", "is_main", "barrier", "comm",
           "broadcast", "allreduce", "DataParallel"]

# Environment variables by which MPI launchers tell a process its place in the job: MPICH and
# Intel MPI (Hydra, PMI; also srun --mpi=pmi2), Open MPI, PMIx (srun --mpi=pmix). Slurm's own
# SLURM_NTASKS/SLURM_PROCID are not used: a batch script that runs `python train.py` without
# srun has them too, and is one process.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")

_lock = threading.Lock()
_comm = None            # the communicator once init() joined one of size > 1
_batch = "global"
_hook_installed = False


def _launched_size():
    """Processes in this job according to the launcher's environment (1 when run alone)."""
    for v in _SIZE_VARS:
        s = os.environ.get(v)
        if s:
            try:
                return max(1, int(s))
            except ValueError:
                continue
    return 1


def _under_launcher():
    return any(os.environ.get(v) for v in _RANK_VARS + _SIZE_VARS)


def init(comm=None, threads=None, batch="global", abort_on_error=True):
    """Join MPI for data-parallel ``fit``; returns the number of ranks.

    comm: an mpi4py communicator to use (default ``MPI.COMM_WORLD``). Passing one makes mpi4py
        required; without it, mpi4py is imported only when a launcher (mpiexec, srun) started
        this process, and a process run alone stays single (a no-op).
    threads: fastrnn threads per rank. Default: the cores this rank may run on divided by the
        ranks on the same node that share them, so N ranks on an N-core node run 1 thread
        each instead of N each (oversubscription makes every rank slower).
    batch: "global" (default): ``fit``'s batch_size is the whole step's batch, split over the
        ranks, and N ranks give the single-process result. "per_rank": batch_size per rank.
    abort_on_error: an exception that reaches the top of the script on one rank prints it and
        calls ``MPI.Abort``, ending every rank with a non-zero status instead of leaving them
        waiting in a collective. (Only rank 0 prints when all ranks raise together.)
    """
    global _comm, _batch
    if batch not in ("global", "per_rank"):
        raise ValueError(f"batch must be 'global' or 'per_rank', got {batch!r}")
    if threads is not None:
        from ._checks import positive_int
        positive_int(threads, "threads")
    with _lock:
        if comm is None:
            if not _under_launcher():
                _batch = batch
                if threads is not None:
                    set_num_threads(threads)
                return 1
            try:
                from mpi4py import MPI
            except ImportError as e:
                if _launched_size() > 1:
                    raise ImportError(
                        f"this process was started by an MPI launcher for {_launched_size()} "
                        "processes, but mpi4py is not installed: pip install 'fastrnn[mpi]' (or "
                        "'fastrnn[mpi-local]' where no MPI library is installed)") from e
                _batch = batch
                return 1
            comm = MPI.COMM_WORLD
        for attr in ("Allreduce", "Bcast", "bcast", "Get_rank", "Get_size"):
            if not hasattr(comm, attr):
                raise TypeError(f"comm must be an mpi4py communicator, got {type(comm).__name__}")
        _batch = batch
        _comm = comm if comm.Get_size() > 1 else None
    if _comm is not None:
        set_num_threads(threads if threads is not None else _threads_per_rank(_comm))
        if abort_on_error:
            _install_abort_hook()
    elif threads is not None:
        set_num_threads(threads)
    return size()


def is_initialized():
    """True when ``init`` joined a communicator of more than one rank."""
    return _comm is not None


def comm():
    """The communicator in use, or None when running alone."""
    return _comm


def rank():
    return 0 if _comm is None else _comm.Get_rank()


def size():
    return 1 if _comm is None else _comm.Get_size()


def is_main():
    """True on rank 0 (and when running alone): the rank that prints and writes files."""
    return rank() == 0


def barrier():
    if _comm is not None:
        _comm.Barrier()


def _threads_per_rank(comm):
    """Cores this rank may use divided by the ranks of its node whose CPU sets overlap it."""
    from mpi4py import MPI
    try:
        mine = frozenset(os.sched_getaffinity(0))
    except AttributeError:                       # not Linux: all CPUs, shared by the node
        mine = frozenset(range(os.cpu_count() or 1))
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        others = node.allgather(mine)
    finally:
        node.Free()
    sharers = sum(1 for s in others if s & mine)
    return max(1, len(mine) // max(1, sharers))


def _install_abort_hook():
    global _hook_installed
    if _hook_installed:
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        c = _comm
        if c is None or kind is KeyboardInterrupt:
            return previous(kind, value, tb)
        r, n = c.Get_rank(), c.Get_size()
        if r:
            # When every rank raises the same error, rank 0 aborts the job within this pause
            # and the error is printed once; when only this rank raised, it follows promptly.
            time.sleep(2.0)
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"fastrnn.distributed: rank {r} of {n} raised; aborting all ranks\n{text}")
        sys.stderr.flush()
        # Abort makes the launcher kill every process, and text still in its forwarding pipes
        # can be lost (seen with MPICH's Hydra about one run in three): let it drain first.
        time.sleep(0.5)
        c.Abort(1)

    sys.excepthook = hook
    _hook_installed = True


# ------------------------------------------------------------------------------ collectives
def broadcast(model, root=0):
    """Make every rank's model equal to rank ``root``'s: parameters, optimizer state, the
    epoch/step counters and the generators. ``fit`` calls it at its start; call it yourself
    before a hand-written loop of ``train_on_batch``."""
    if _comm is None:
        return
    c = _comm
    for a in _model_arrays(model):
        c.Bcast(a, root=root)
    opt = getattr(model, "optimizer", None)
    meta = {"epoch": getattr(model, "epoch", None), "step": getattr(model, "step", None),
            "gens": [g.bit_generator.state for g in _generators(model)],
            "opt": opt.state_dict() if opt is not None else None}
    meta = c.bcast(meta if c.Get_rank() == root else None, root=root)
    for g, s in zip(_generators(model), meta["gens"]):
        g.bit_generator.state = s
    if meta["epoch"] is not None:
        model.epoch, model.step = meta["epoch"], meta["step"]
    if opt is not None and meta["opt"] is not None:
        opt.load_state_dict(meta["opt"])


def _model_arrays(model):
    params = model.parameters()
    return [params[k] for k in sorted(params)]


def _generators(model):
    """The model's generators: its own (shuffle, dropout, sampling) and its engines'."""
    gens = [model.rng] if isinstance(getattr(model, "rng", None), np.random.Generator) else []
    for e in model._engines() if hasattr(model, "_engines") else []:
        g = getattr(e, "_rng", None)
        if isinstance(g, np.random.Generator) and all(g is not h for h in gens):
            gens.append(g)
    return gens


def allreduce(array):
    """Sum ``array`` over all ranks in place (buffer-based ``Allreduce``); returns it."""
    if _comm is not None:
        from mpi4py import MPI
        _comm.Allreduce(MPI.IN_PLACE, array)
    return array


def agree(value, what):
    """Check that every rank passed the same ``value`` (a small picklable description); raises
    the same ValueError on every rank otherwise, so none is left waiting."""
    if _comm is None:
        return
    values = _comm.allgather(value)
    if any(v != values[0] for v in values):
        raise ValueError(f"the ranks disagree on {what}: " + ", ".join(
            f"rank {i}: {v!r}" for i, v in enumerate(values)))


def any_rank(flag):
    """True on every rank when ``flag`` is true on any rank."""
    if _comm is None:
        return bool(flag)
    return bool(_comm.allreduce(int(bool(flag))))


class DataParallel:
    """What ``fit`` needs on N ranks: the split of each batch, the gradient average, the reduced
    logs. Built by ``data_parallel(model)`` only when more than one rank takes part."""

    def __init__(self, model, comm):
        self.model, self.comm = model, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.batch = _batch
        self._buf = None

    # ---- batches ---------------------------------------------------------------------
    def plan(self, N, batch_size, sharded):
        """Steps per epoch and the global batch size for this rank's N samples."""
        if not sharded:
            agree(N, "the number of training samples (pass the same data on every rank, or "
                     "fit(..., sharded=True) with each rank's own part)")
            B = batch_size * (self.size if self.batch == "per_rank" else 1)
            return -(-N // B), B
        if self.batch == "per_rank":
            return self.comm.allreduce(-(-N // batch_size), op=_op("MAX")), batch_size
        total = self.comm.allreduce(N)
        return -(-total // batch_size), batch_size

    def part(self, order, b, steps, B, sharded):
        """This rank's sample indices for step b (possibly empty)."""
        if sharded:
            N = len(order)
            if self.batch == "per_rank":
                return order[b * B:(b + 1) * B]
            return order[N * b // steps:N * (b + 1) // steps]
        idx = order[b * B:(b + 1) * B]
        n = len(idx)
        return idx[n * self.rank // self.size:n * (self.rank + 1) // self.size]

    def split(self, n):
        """This rank's contiguous slice of n replicated items."""
        return slice(n * self.rank // self.size, n * (self.rank + 1) // self.size)

    # ---- gradients -------------------------------------------------------------------
    def average_grads(self, value, weight):
        """Replace every rank's gradients by the weighted mean over ranks, in one Allreduce;
        returns the global loss (NaN on every rank when any rank's loss is not finite)."""
        grads = self.model.grads
        names = sorted(grads)
        n = sum(grads[k].size for k in names)
        dtype = np.result_type(*[grads[k].dtype for k in names]) if names else np.float64
        if self._buf is None or self._buf.size != n + 2 or self._buf.dtype != dtype:
            self._buf = np.empty(n + 2, dtype)
        buf, o = self._buf, 0
        w = float(weight)
        for k in names:
            g = grads[k]
            np.multiply(g.reshape(-1), w, out=buf[o:o + g.size])
            o += g.size
        buf[n] = w * value if w else 0.0
        buf[n + 1] = w
        allreduce(buf)
        W = float(buf[n + 1])
        if W > 0:
            buf[:n + 1] /= buf.dtype.type(W)
        else:
            buf[:n + 1] = 0
        o = 0
        for k in names:
            g = grads[k]
            g[...] = buf[o:o + g.size].reshape(g.shape)
            o += g.size
        return float(buf[n])

    # ---- logs ------------------------------------------------------------------------
    def reduce_sums(self, sums):
        keys = sorted(sums)
        agree(keys, "the logged values")
        v = np.array([sums[k] for k in keys], np.float64).reshape(-1)
        allreduce(v)
        return {k: [v[2 * i], v[2 * i + 1]] for i, k in enumerate(keys)}


def _op(name):
    from mpi4py import MPI
    return getattr(MPI, name)


def data_parallel(model):
    """A DataParallel for ``model`` when more than one rank takes part, else None."""
    return None if _comm is None else DataParallel(model, _comm)
