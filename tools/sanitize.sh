#!/usr/bin/env bash
# Builds fastrnn's extension with AddressSanitizer and UndefinedBehaviorSanitizer in a copy of this
# checkout, and runs the test suite against that build. The normal in-place build is not touched.
#
#   tools/sanitize.sh                      # the whole suite (about 10x slower than normally)
#   tools/sanitize.sh tests/test_engine_trust.py -k nan     # any pytest arguments
#   FASTRNN_SAN_DIR=/tmp/san tools/sanitize.sh              # where the copy and the logs go
#
# How:
#   - the tracked and untracked-but-not-ignored files of this checkout (uncommitted edits
#     included, build products excluded) are copied to $FASTRNN_SAN_DIR/src and built there in
#     place with FASTRNN_EXTRA_CFLAGS (setup.py appends them after its own flags, so -O1 and
#     -fno-wrapv override -O3 and Python's -fwrapv; without -fno-wrapv UBSan cannot see signed
#     overflow, which -fwrapv defines);
#   - the Python interpreter is not built with ASan, so the ASan runtime (and libstdc++, for the
#     C++ extensions that tests import) is LD_PRELOADed; Python
#     and NumPy keep memory alive until exit on purpose, so leak detection is off;
#   - UBSan reports and ASan reports go to $FASTRNN_SAN_DIR/logs (one file per process:
#     forked children and subprocesses report too); UBSan continues after a report, ASan aborts
#     the process at the first one; the script lists every report at the end and exits 1 if
#     there was any (or if pytest failed).
#   - the Cython-generated _core.c is instrumented too, OpenBLAS and NumPy are not.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${FASTRNN_SAN_DIR:-${TMPDIR:-/tmp}/fastrnn-sanitize-$(id -u)}"
cc="${CC:-gcc}"
py="${PYTHON:-python}"

libasan="$($cc -print-file-name=libasan.so)"
if [ ! -e "$libasan" ]; then
    echo "sanitize.sh: $cc has no libasan.so ($libasan); install the compiler's sanitizer runtime" >&2
    exit 2
fi

echo "sanitize.sh: copying $here to $dir/src"
rm -rf "$dir/src" "$dir/logs"
mkdir -p "$dir/src" "$dir/logs"
(cd "$here" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -) | tar -xf - -C "$dir/src"

echo "sanitize.sh: building with -fsanitize=address,undefined"
export FASTRNN_EXTRA_CFLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=address -fno-wrapv"
export FASTRNN_EXTRA_LDFLAGS="-fsanitize=address,undefined"
(cd "$dir/src" && CC="$cc" "$py" setup.py build_ext --inplace >"$dir/logs/build.txt" 2>&1) || {
    tail -30 "$dir/logs/build.txt" >&2
    exit 2
}
unset FASTRNN_EXTRA_CFLAGS FASTRNN_EXTRA_LDFLAGS

# libstdc++ preloaded with it: C++ extensions (matplotlib, torch) throw exceptions, and ASan's
# __cxa_throw interceptor aborts if libstdc++ was not loaded when ASan initialised
libstdcxx="$($cc -print-file-name=libstdc++.so)"
export LD_PRELOAD="$libasan:$libstdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$dir/logs/asan:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0:log_path=$dir/logs/ubsan:${UBSAN_OPTIONS:-}"

echo "sanitize.sh: running pytest in $dir/src (reports: $dir/logs)"
start=$(date +%s)
set +e
(cd "$dir/src" && "$py" -m pytest -q -p no:cacheprovider "${@:-tests/}")
status=$?
set -e
echo "sanitize.sh: pytest exit status $status after $(( $(date +%s) - start )) s"

reports=$(find "$dir/logs" -name 'asan.*' -o -name 'ubsan.*' | sort)
if [ -n "$reports" ]; then
    echo "sanitize.sh: sanitizer reports:"
    for f in $reports; do
        echo "---- $f"
        head -40 "$f"
    done
    echo "sanitize.sh: $(echo "$reports" | wc -l) report file(s), $(cat $reports | grep -c -E 'runtime error|ERROR: AddressSanitizer') report(s)"
    exit 1
fi
echo "sanitize.sh: no sanitizer reports"
exit $status
