"""Packaging: the source distribution builds, holds every file it should and no build product,
installs into a fresh venv (build isolation, as a user's pip does it) and passes a subset of the
tests there; and the C compiles without AVX2 (baseline x86-64) and for aarch64, as the portable
wheels need.

The sdist test takes about a minute (two isolated builds: the sdist, then the wheel pip makes
from it, which compiles the extension). It skips only when the package index is unreachable.
"""
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
C_SOURCES = ["fastrnn.c", "plan.c", "pool.c", "optim.c"]

# What setuptools adds to every sdist.
SDIST_METADATA = re.compile(r"^(PKG-INFO|setup\.cfg|fastrnn\.egg-info/[^/]+)$")
# Build products and caches: never in an sdist.
BUILD_PRODUCT = re.compile(r"(\.(so|pyd|o|obj|a|lib|dll|dylib|pyc|pyo)$|(^|/)__pycache__/|^fastrnn/_core\.c$"
                           r"|^(build|dist)/|(^|/)\.(hypothesis|pytest_cache|benchmarks)/|^bench/results/)")
# The files the issue found missing, and the sources the extension is built from.
MUST_SHIP = ["fastrnn/_core.pyx", "fastrnn/_core.pxd", "setup.py", "pyproject.toml", "LICENSE",
             "README.md", "tests/tolerances.py", "tests/fd.py", "tests/fixtures/saved/expected.npz",
             *(f"csrc/{name}" for name in C_SOURCES)]
SUBSET = ["test_engine_api.py", "test_saved_fixtures.py"]

# pip's words for an index it cannot reach (DNS, refused or timed-out connections, proxies), and
# for one that lists no version at all of a package as common as numpy or setuptools (without
# retries pip says only that)
UNREACHABLE = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
                         r"resolution|Name or service not known|Network is unreachable|Connection refused|"
                         r"ConnectTimeout|ReadTimeoutError|ProxyError|Could not fetch URL|\(from versions: none\)")


def _not_shipped(path):
    """Tracked files that are the repository's own, not a source distribution's (MANIFEST.in)."""
    return path == ".gitignore" or path.startswith(".ci/")


def _env():
    """The environment for child processes, without what would let them import this tree."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH"):
        env.pop(key, None)
    return env


def _run(cmd, *, cwd, what, timeout=900, pip=False):
    """Runs cmd; a failure fails the test with its output, except that a pip step that could not
    reach the package index skips it."""
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                       timeout=timeout)
    out = r.stdout + r.stderr
    if r.returncode != 0 and pip and UNREACHABLE.search(out):
        line = next(ln for ln in out.splitlines() if UNREACHABLE.search(ln))
        pytest.skip(f"package index unreachable during {what}: {line.strip()[:200]}")
    assert r.returncode == 0, f"{what} failed ({' '.join(map(str, cmd))}):\n{out[-6000:]}"
    return out


def _git_files():
    """The tracked files that exist in the working tree, and the untracked, not ignored ones; None
    outside a git checkout (an unpacked sdist)."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        return None

    def ls(*args):
        r = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", *args], capture_output=True)
        return None if r.returncode else {p for p in r.stdout.decode().split("\0") if p}
    tracked, untracked = ls(), ls("--others", "--exclude-standard")
    if tracked is None or untracked is None:
        return None
    return {p for p in tracked if (ROOT / p).is_file()}, untracked


def _check_sdist_files(names, git, own_sources):
    """names: the sdist's files (relative to its top directory)."""
    products = sorted(n for n in names if BUILD_PRODUCT.search(n))
    assert not products, f"build products in the sdist: {products}"
    missing = [n for n in MUST_SHIP if n not in names]
    assert not missing, f"the sdist lacks {missing}"
    if git is not None:
        tracked, untracked = git
        missing = sorted(p for p in tracked - names if not _not_shipped(p))
        assert not missing, f"tracked files missing from the sdist (MANIFEST.in): {missing}"
        extra = sorted(n for n in names - tracked if not SDIST_METADATA.match(n) and n not in untracked)
        assert not extra, f"files in the sdist that git neither tracks nor sees as untracked: {extra}"
    elif own_sources is not None:
        # an unpacked sdist: the new sdist holds what the one it came from listed
        missing = sorted(own_sources - names)
        assert not missing, f"files of the original sdist missing from the rebuilt one: {missing}"
        extra = sorted(n for n in names - own_sources if not SDIST_METADATA.match(n))
        assert not extra, f"files in the rebuilt sdist that the original did not list: {extra}"


def _venv_bin(venv, name):
    return venv / ("Scripts" if os.name == "nt" else "bin") / (name + (".exe" if os.name == "nt" else ""))


SMOKE = textwrap.dedent("""
    import importlib.metadata as md, os, sys
    import numpy as np
    import fastrnn as fr
    from fastrnn import reference as ref
    here = os.path.realpath(fr.__file__)
    assert here.startswith(os.path.realpath(sys.prefix)), here   # the installed copy, not a source tree
    meta = md.metadata("fastrnn")
    assert meta["License-Expression"] == "MIT", meta["License-Expression"]
    lic = [f for f in md.files("fastrnn") if f.name == "LICENSE"]
    assert lic and "MIT License" in lic[0].read_text(), lic
    x = np.random.default_rng(0).standard_normal((6, 3, 4))
    lstm = fr.LSTM(4, 8, dtype=np.float64, seed=0)
    y, (h, c) = lstm(x)
    want = ref.forward("LSTM", lstm.state_dict(), x)[0]
    assert y.shape == (6, 3, 8) and np.allclose(y, want, rtol=1e-10, atol=1e-12)
    print("smoke ok", fr.__version__, here)
""")


@pytest.mark.packaging
def test_sdist_builds_ships_the_tree_and_installs_in_a_fresh_venv(tmp_path):
    if not (ROOT / "setup.py").is_file():
        pytest.skip("no source tree (setup.py) above tests/: these tests were copied out of it")
    assert shutil.which("git") or not (ROOT / ".git").exists(), "git is needed to check the sdist"
    if importlib.util.find_spec("build") is None:
        pytest.fail("`build` is not installed: pip install build (it is in the test extra)")
    git = _git_files()
    sources = ROOT / "fastrnn.egg-info" / "SOURCES.txt"
    own_sources = None
    if git is None and (ROOT / "PKG-INFO").is_file() and sources.is_file():
        own_sources = {ln.strip() for ln in sources.read_text().splitlines() if ln.strip()}

    # 1. the sdist, built by `python -m build --sdist` (isolated, from [build-system]) in a copy of
    # the tree as a fresh clone has it: a stale fastrnn.egg-info/SOURCES.txt in the checkout would
    # add the files it lists whatever MANIFEST.in says (and building there would write into it)
    src = tmp_path / "src"
    if git is not None:
        for rel in sorted(git[0] | git[1]):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    else:
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
            "build", "dist", "*.so", "*.pyd", "*.o", "__pycache__", ".hypothesis", ".pytest_cache", "_core.c"))
    dist = tmp_path / "dist"
    out = _run([sys.executable, "-m", "build", "--sdist", "--outdir", dist, src], cwd=tmp_path,
               what="python -m build --sdist", pip=True)
    warned = [ln for ln in out.splitlines() if re.search("deprecat", ln, re.I) and re.search("licen[cs]", ln, re.I)]
    assert not warned, f"license deprecation warnings: {warned}"
    (sdist,) = dist.glob("fastrnn-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        top = members[0].name.split("/")[0]
        names = {m.name[len(top) + 1:] for m in members if m.isfile()}
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp_path / "unpacked", filter="data")
        else:
            tar.extractall(tmp_path / "unpacked")
    _check_sdist_files(names, git, own_sources)

    # 2. a fresh venv and the sdist installed into it as a user would (pip builds the wheel with
    # build isolation), with pytest for the subset below
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path, what="python -m venv")
    python = _venv_bin(venv, "python")
    _run([python, "-m", "pip", "install", "--disable-pip-version-check", sdist, "pytest>=7"], cwd=tmp_path,
         what="pip install <sdist> into a fresh venv", pip=True)

    # 3. a smoke check, then the subset of the sdist's own tests against the installed package,
    # from a directory without a fastrnn/ source tree to shadow it
    work = tmp_path / "work"
    work.mkdir()
    print(_run([python, "-c", SMOKE], cwd=work, what="smoke check in the venv"))
    shutil.copytree(tmp_path / "unpacked" / top / "tests", work / "tests")
    out = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(f"tests/{t}" for t in SUBSET)],
               cwd=work, what="the test subset in the venv")
    assert re.search(r"\d+ passed", out) and " failed" not in out, out[-3000:]


# ---- the C without AVX2, and for aarch64: compile only -------------------------------------------

def _blas_include():
    scipy_openblas32 = pytest.importorskip("scipy_openblas32")
    return scipy_openblas32.get_include_dir()


def _compile_all(cc, flags, out_dir):
    """Compiles csrc's C files (C_SOURCES) to objects; a warning fails as an error does."""
    objs = []
    for name in C_SOURCES:
        obj = out_dir / (Path(name).stem + ".o")
        cmd = [*cc, "-std=c99", "-O2", "-Wall", "-Wextra", *flags, "-I", str(CSRC), "-I", _blas_include(),
               "-c", str(CSRC / name), "-o", str(obj)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "warning:" not in r.stderr, f"{' '.join(cmd)}\n{r.stderr}"
        objs.append(obj)
    return objs


def _elf_machine(path):
    data = path.read_bytes()[:20]
    assert data[:4] == b"\x7fELF", path
    return int.from_bytes(data[18:20], "little")


HOST_CC = [["cc"], ["clang"]]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 host only")
@pytest.mark.parametrize("cc", HOST_CC, ids=lambda c: c[0])
def test_csrc_compiles_for_baseline_x86_64_without_avx2(cc, tmp_path):
    """The portable build: no -mavx2 anywhere, the AVX2+FMA kernels are per-function targets."""
    if shutil.which(cc[0]) is None or sys.platform == "win32":
        pytest.skip(f"no {cc[0]} (a GCC or clang driver) on PATH")
    _compile_all(cc, ["-march=x86-64", "-mno-avx2", "-mno-fma"], tmp_path)


AARCH64_CC = [["aarch64-linux-gnu-gcc"], ["clang", "--target=aarch64-linux-gnu"]]


@pytest.mark.parametrize("cc", AARCH64_CC, ids=lambda c: " ".join(c))
def test_csrc_compiles_for_aarch64(cc, tmp_path):
    if shutil.which(cc[0]) is None:
        pytest.skip(f"no {cc[0]} on PATH (Debian/Ubuntu: apt-get install gcc-aarch64-linux-gnu)")
    probe = tmp_path / "probe.c"
    probe.write_text("#include <stdlib.h>\n#include <pthread.h>\nint main(void) { return 0; }\n")
    r = subprocess.run([*cc, "-std=c99", "-c", str(probe), "-o", str(tmp_path / "probe.o")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"{' '.join(cc)} has no aarch64 C library headers (install gcc-aarch64-linux-gnu): "
                    f"{r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    for obj in _compile_all(cc, [], tmp_path):
        assert _elf_machine(obj) == 183, obj   # EM_AARCH64
