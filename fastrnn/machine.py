"""What fastrnn knows of the CPU it runs on: model, SIMD features, CPUs it may use and cache
sizes, read once from the operating system (Linux: /proc/cpuinfo and sysfs; macOS: sysctl).
Unknown values are None. The plan's derived thresholds (``fastrnn.tune``) and the benchmark
headers come from here."""
import functools
import os
import platform
import re
import subprocess

__all__ = ["facts", "cpu_key"]

_FLAGS = ("avx512f", "avx2", "fma", "asimd", "neon")


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _size(text):
    """'32K' / '1024K' / '32M' / '12345' (bytes) -> bytes, or None."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)B?", text or "", re.I)
    if not m:
        return None
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2).upper()]


def _linux_caches():
    """{'l1d', 'l2', 'l3'}: bytes of one instance of each data/unified cache seen by cpu0, and
    'l3_cpus': how many CPUs share that L3."""
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return out
    for e in entries:
        if not e.startswith("index"):
            continue
        level, kind = _read(f"{base}/{e}/level"), _read(f"{base}/{e}/type")
        size = _size(_read(f"{base}/{e}/size"))
        if level is None or kind not in ("Data", "Unified") or size is None:
            continue
        name = "l1d" if level == "1" else f"l{level}"
        out[name] = size
        if level == "3":
            shared = _read(f"{base}/{e}/shared_cpu_list") or ""
            cpus = 0
            for part in filter(None, shared.split(",")):
                a, _, b = part.partition("-")
                cpus += (int(b) - int(a) + 1) if b else 1
            out["l3_cpus"] = cpus or None
    return out


def _linux_cpuinfo():
    text = _read("/proc/cpuinfo") or ""
    first = text.split("\n\n", 1)[0]
    kv = {}
    for line in first.splitlines():
        k, sep, v = line.partition(":")
        if sep:
            kv.setdefault(k.strip().lower(), v.strip())
    flags = set((kv.get("flags") or kv.get("features") or "").split())
    return {"model": kv.get("model name") or kv.get("cpu model") or kv.get("hardware"),
            "vendor": kv.get("vendor_id") or kv.get("cpu implementer"),
            "family": kv.get("cpu family"), "model_number": kv.get("model") or kv.get("cpu part"),
            "flags": sorted(f for f in _FLAGS if f in flags)}


def _sysctl(name):
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True,
                              timeout=2).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _darwin():
    out = {"model": _sysctl("machdep.cpu.brand_string"), "vendor": _sysctl("machdep.cpu.vendor"),
           "family": _sysctl("machdep.cpu.family"), "model_number": _sysctl("machdep.cpu.model"),
           "flags": []}
    feats = ((_sysctl("machdep.cpu.features") or "") + " " + (_sysctl("machdep.cpu.leaf7_features") or "")).lower()
    out["flags"] = sorted(f for f in ("avx512f", "avx2", "fma") if f in feats.split()) or \
        (["asimd"] if platform.machine() == "arm64" else [])
    for k, name in (("l1d", "hw.l1dcachesize"), ("l2", "hw.l2cachesize"), ("l3", "hw.l3cachesize")):
        v = _sysctl(name)
        out[k] = int(v) if v and v.isdigit() and int(v) > 0 else None
    return out


@functools.lru_cache(maxsize=1)
def facts():
    """A dict: model, vendor, family, model_number (strings or None), flags (of avx512f, avx2,
    fma, asimd, neon), machine (x86_64, aarch64, ...), cpus (os.cpu_count), usable (CPUs this
    process may run on), l1d, l2, l3 (bytes per instance, or None), l3_cpus (CPUs sharing it)."""
    out = {"model": None, "vendor": None, "family": None, "model_number": None, "flags": [],
           "l1d": None, "l2": None, "l3": None, "l3_cpus": None}
    if os.path.exists("/proc/cpuinfo"):
        out.update(_linux_cpuinfo())
        out.update(_linux_caches())
    elif platform.system() == "Darwin":
        out.update(_darwin())
    out["machine"] = platform.machine()
    out["model"] = out["model"] or platform.processor() or out["machine"] or "unknown"
    out["cpus"] = os.cpu_count()
    try:
        out["usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        out["usable"] = out["cpus"]
    return dict(out)


def cpu_key(f=None):
    """A file-name-safe name of this CPU kind (model, family, model number, architecture): the
    tuning cache keeps one plan per key."""
    f = f or facts()
    raw = "-".join(str(v) for v in (f["model"], f["family"], f["model_number"], f["machine"]) if v)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("_")[:120] or "unknown"
