"""The shape of the package, checked from its source text (nothing here imports fastrnn).

Check 1 -- layering: every module of ``fastrnn`` has a rank (LAYERS below); a module may import
only modules of its own rank or lower, at module level or inside a function, relative or
absolute; no set of modules imports itself round in a circle (within a rank, e.g. inside
fastrnn/train/); a few modules may import no fastrnn module at all (ISOLATED).

Check 2 -- typed kernel calls: no module of the package passes kernel arguments through arrays
of untyped pointers (the named structs of csrc/fastrnn.h carry them).
"""
import ast
import re
from pathlib import Path

PKG = "fastrnn"
ROOT = Path(__file__).resolve().parent.parent / PKG

# ============================================================================ check 1: layering
# Lowest first. A name stands for the module and, for a package, everything inside it.
LAYERS = [
    ("base", ["fastrnn._checks", "fastrnn._cells", "fastrnn.machine"]),  # checks, cell maths, CPU facts
    ("data", ["fastrnn.datasets"]),                        # data generators: numpy and _checks
    ("bridge", ["fastrnn._core"]),                         # the Cython bridge to the C kernels
    ("engine", ["fastrnn.layers", "fastrnn.reference", "fastrnn._numpy_blas", "fastrnn.tuning"]),
    ("dist", ["fastrnn.distributed"]),                     # MPI data parallelism (mpi4py, lazily)
    ("train", ["fastrnn.train"]),                          # models, losses, optimizers, fit, I/O
    ("lore", ["fastrnn.lore"]),                            # ESN, AR, initialisers, diagnostics
    ("estimators", ["fastrnn.sklearn", "fastrnn.forecasting"]),  # sklearn estimators; CLI forecasting
    ("top", ["fastrnn.cli", "fastrnn.__main__", "fastrnn"]),   # "fastrnn" is fastrnn/__init__.py
]

# Modules that may import no fastrnn module at all.
ISOLATED = {
    "fastrnn._checks": "imports only numpy, so every layer can use it",
    "fastrnn.reference": "the independent ground truth: bench/ loads it by path, without the package",
}

RANK = {name: i for i, (_, names) in enumerate(LAYERS) for name in names}


def rank_of(module):
    """Rank of a module: its own entry or its closest enclosing package's ("fastrnn" itself
    stands for fastrnn/__init__.py only, so an unlisted module has no rank)."""
    parts = module.split(".")
    for k in range(len(parts), 1, -1):
        name = ".".join(parts[:k])
        if name in RANK:
            return RANK[name]
    return RANK.get(module) if module == PKG else None


def module_files():
    """{module name: path} of every .py and .pyx file of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")) + sorted(ROOT.rglob("*.pyx")):
        if "build" in path.relative_to(ROOT).parts:
            continue
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_package(path):
    return path.name == "__init__.py"


def _resolve(module, is_pkg, level, target):
    """Absolute name of ``from <level dots><target> import ...`` written in ``module``."""
    if level == 0:
        return target
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _targets(name, names, known):
    """Modules an import of ``names`` from ``name`` loads: the submodules among the names, else
    the module itself."""
    subs = [f"{name}.{n}" for n in names if f"{name}.{n}" in known]
    return subs if subs and len(subs) == len(names) else [name] + subs


_DYNAMIC = {"import_module", "__import__"}


def imports_of_py(module, path, known):
    """(line, imported fastrnn module) of every import in a .py file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = _is_package(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.append((node.lineno, a.name))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_pkg, node.level, node.module)
            for t in _targets(base, [a.name for a in node.names], known):
                found.append((node.lineno, t))
        elif isinstance(node, ast.Call):
            f = node.func
            fname = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if fname in _DYNAMIC and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return [(line, t) for line, t in found if t == PKG or t.startswith(PKG + ".")]


_PYX_IMPORT = re.compile(r"^\s*(?:from\s+(\.*[\w.]*)\s+c?import\s+\(?([\w., ]+)|c?import\s+([\w., ]+))")


def imports_of_pyx(module, path, known):
    """(line, imported fastrnn module) of the import/cimport lines of a Cython file."""
    found = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = _PYX_IMPORT.match(line.split("#")[0])
        if not m:
            continue
        if m.group(3):
            found += [(i, n.split(" as ")[0].strip()) for n in m.group(3).split(",")]
            continue
        src = m.group(1)
        level = len(src) - len(src.lstrip("."))
        base = _resolve(module, False, level, src.lstrip(".") or None)
        names = [n.split(" as ")[0].strip() for n in m.group(2).split(",") if n.strip()]
        found += [(i, t) for t in _targets(base, names, known)]
    return [(line, t) for line, t in found if t == PKG or t.startswith(PKG + ".")]


def import_graph():
    files = module_files()
    known = set(files)
    graph = {}
    for module, path in files.items():
        reader = imports_of_pyx if path.suffix == ".pyx" else imports_of_py
        graph[module] = [(line, t) for line, t in reader(module, path, known) if t != module]
    return files, graph


def layering_violations(files, graph):
    problems = []
    for module, edges in sorted(graph.items()):
        r = rank_of(module)
        if r is None:
            problems.append(f"{module} has no rank: add it to LAYERS in tests/test_architecture.py")
            continue
        for line, target in edges:
            where = f"{files[module].relative_to(ROOT.parent)}:{line}"
            if module in ISOLATED:
                problems.append(f"{where}: {module} imports {target}, but it must import no fastrnn "
                                f"module ({ISOLATED[module]})")
                continue
            t = rank_of(target)
            if t is None:
                problems.append(f"{where}: {module} imports {target}, which has no rank")
            elif t > r:
                problems.append(f"{where}: {module} ({LAYERS[r][0]}) imports {target} "
                                f"({LAYERS[t][0]}), a higher layer")
    return problems


def find_cycles(graph):
    """Circles of imports among the package's modules (each reported once), by depth-first search."""
    nodes = set(graph)
    adj = {m: sorted({t for _, t in graph[m] if t in nodes}) for m in graph}
    state, stack, cycles, seen = {}, [], [], set()

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in adj[m]:
            if state.get(t) == 1:
                cyc = stack[stack.index(t):]
                key = frozenset(cyc)
                if key not in seen:
                    seen.add(key)
                    cycles.append(cyc + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(nodes):
        if m not in state:
            visit(m)
    return cycles


def test_every_import_goes_down_the_layers_and_none_closes_a_circle():
    files, graph = import_graph()
    assert "fastrnn._core" in files and "fastrnn.train.model" in files   # the scan sees the package
    problems = layering_violations(files, graph)
    problems += ["import circle: " + " -> ".join(c) for c in find_cycles(graph)]
    assert not problems, "\n".join(problems)


def test_the_checker_sees_upward_lazy_relative_imports_and_circles(tmp_path):
    """The rules above on a made-up graph, so that a checker that sees nothing cannot pass."""
    known = {"fastrnn.train", "fastrnn.train.io", "fastrnn.train.model", "fastrnn.lore"}
    src = tmp_path / "io.py"
    src.write_text("import numpy\n\ndef f():\n    from ..lore import init\n    from . import model\n")
    assert imports_of_py("fastrnn.train.io", src, known) == [(4, "fastrnn.lore"), (5, "fastrnn.train.model")]
    pyx = tmp_path / "_core.pyx"
    pyx.write_text("cimport numpy as cnp\nfrom libc.stdlib cimport free\nfrom .train import (model,\n"
                   "import fastrnn.lore as lore  # trailing comment\n")
    assert imports_of_pyx("fastrnn._core", pyx, known) == [(3, "fastrnn.train.model"), (4, "fastrnn.lore")]
    files = {m: ROOT / "x.py" for m in ("fastrnn.train.io", "fastrnn.train.model", "fastrnn.lore")}
    graph = {"fastrnn.train.io": [(4, "fastrnn.lore"), (5, "fastrnn.train.model")],
             "fastrnn.train.model": [(1, "fastrnn.train.io")], "fastrnn.lore": []}
    assert any("a higher layer" in p for p in layering_violations(files, graph))
    assert find_cycles(graph) == [["fastrnn.train.io", "fastrnn.train.model", "fastrnn.train.io"]]


# ============================================================================ check 2: typed kernel calls
# Kernel arguments travel in the named structs of csrc/fastrnn.h (one per kind of call, declared
# in fastrnn/_core.pxd), never through arrays of untyped pointers (`void *p[16]` with slots
# reused under other names) or untyped pointer lists (`void **`): a slot mix-up there is a
# silent buffer overrun that no compiler sees.

UNTYPED = [
    (re.compile(r"\bvoid\s*\*+\s*\w+\s*\["), "an array of void pointers"),
    (re.compile(r"\bvoid\s*\*\s*\*"), "a void ** (untyped pointer list)"),
    (re.compile(r"<\s*(?:const\s+)?(?:float|double|void)\s*\*\s*>\s*\w+(?:\.\w+)*\s*\[\s*\d+\s*\]"),
     "a cast of a numbered pointer slot"),
]


def untyped_pointer_uses(path):
    """(line, what) for every untyped pointer array or slot in one bridge file."""
    found = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        found += [(n, what) for pattern, what in UNTYPED if pattern.search(code)]
    return found


def bridge_files():
    return sorted(ROOT.rglob("*.pyx")) + sorted(ROOT.rglob("*.pxd")) + [
        p for p in sorted(ROOT.rglob("*.py")) if "build" not in p.relative_to(ROOT).parts]


def test_no_module_passes_kernel_arguments_through_untyped_pointer_arrays():
    files = bridge_files()
    assert any(p.name == "_core.pyx" for p in files) and any(p.name == "_core.pxd" for p in files)
    problems = [f"{p.relative_to(ROOT.parent)}:{n}: {what}" for p in files for n, what in untyped_pointer_uses(p)]
    assert not problems, "\n".join(problems)


def test_the_pointer_check_sees_the_old_bridge(tmp_path):
    """What the bridge looked like before the named structs must be caught, line by line."""
    src = tmp_path / "old.pyx"
    src.write_text("cdef struct job_t:\n    void *p[16]\n"
                   "cdef void **args = <void**>PyMem_Malloc(8)\n"
                   "fr_recur_f32(j.c, <float*>p[0], <double*>j.p[13])\n"
                   "cdef void *px = _ptr(x)  # void *q[2] in a comment is fine\n")
    assert [n for n, _ in untyped_pointer_uses(src)] == [2, 3, 4]
