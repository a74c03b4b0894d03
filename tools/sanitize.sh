#!/usr/bin/env bash
# Runs the test suite against fastrnn's extension built with AddressSanitizer, then with
# UndefinedBehaviorSanitizer, each in its own copy of this checkout: the normal in-place build is
# not touched. Exits 1 if any test failed or any sanitizer reported anything.
#
#   tools/sanitize.sh                                       # whole suite, ASan then UBSan
#   tools/sanitize.sh tests/test_engine_trust.py -k nan     # any pytest arguments
#   FASTRNN_SANITIZERS=undefined tools/sanitize.sh          # one of them
#   FASTRNN_SANITIZERS=thread tools/sanitize.sh tests/test_engine_trust.py -k "concurrent"
#                                   # ThreadSanitizer, opt-in: the pool tests (not fork: TSan does
#                                   # not support fork in a threaded process)
#   FASTRNN_SAN_DIR=/tmp/san tools/sanitize.sh              # where the copies and logs go
#
# How:
#   - the tracked and untracked-but-not-ignored files of this checkout (uncommitted edits
#     included, build products excluded) are copied to $FASTRNN_SAN_DIR/<sanitizer>/src and built
#     there in place with FASTRNN_EXTRA_CFLAGS, which setup.py appends after its own flags: -O1
#     and -fno-wrapv override -O3 and Python's -fwrapv (under -fwrapv signed overflow is defined,
#     and UBSan cannot report it);
#   - the interpreter is not built with ASan (or TSan), so that runtime is LD_PRELOADed, with
#     libstdc++ (C++ extensions the tests import throw exceptions, and ASan's __cxa_throw
#     interceptor aborts if libstdc++ was not loaded when it initialised); Python and NumPy keep
#     memory alive until exit on purpose, so leak detection is off; tests that ask NumPy for more
#     memory than there is expect a MemoryError, so ASan's allocator returns NULL instead of
#     aborting (allocator_may_return_null);
#   - two builds rather than one with both: GCC's UBSan runtime ignores log_path when ASan is
#     loaded and writes to stderr, which pytest captures and drops for passing tests (and the
#     suite's subprocesses capture too). Alone, UBSan writes every report to a file;
#   - every process (forked children and subprocesses too) writes its reports to
#     $FASTRNN_SAN_DIR/logs/<sanitizer>.<pid>; ASan stops a process at its first report, UBSan
#     continues; the script lists every report at the end;
#   - the Cython-generated _core.c is instrumented too; OpenBLAS and NumPy are not.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${FASTRNN_SAN_DIR:-${TMPDIR:-/tmp}/fastrnn-sanitize-$(id -u)}"
sanitizers="${FASTRNN_SANITIZERS:-address undefined}"
cc="${CC:-gcc}"
py="${PYTHON:-python}"
common="-O1 -g -fno-omit-frame-pointer"

rm -rf "$dir/logs"
mkdir -p "$dir/logs"
status=0
for san in $sanitizers; do
    case "$san" in
    address)   cflags="$common -fsanitize=address"; runtime=libasan.so
               opts="ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:log_path=$dir/logs/asan:${ASAN_OPTIONS:-}" ;;
    undefined) cflags="$common -fsanitize=undefined -fno-wrapv"; runtime=
               opts="UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0:log_path=$dir/logs/ubsan:${UBSAN_OPTIONS:-}" ;;
    thread)    cflags="$common -fsanitize=thread"; runtime=libtsan.so
               opts="TSAN_OPTIONS=halt_on_error=0:report_signal_unsafe=0:log_path=$dir/logs/tsan:${TSAN_OPTIONS:-}" ;;
    *) echo "sanitize.sh: unknown sanitizer '$san' (address, undefined, thread)" >&2; exit 2 ;;
    esac
    src="$dir/$san/src"
    echo "sanitize.sh: [$san] copying $here to $src"
    rm -rf "$src"
    mkdir -p "$src"
    (cd "$here" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$src"

    echo "sanitize.sh: [$san] building with $cflags"
    if ! (cd "$src" && CC="$cc" FASTRNN_EXTRA_CFLAGS="$cflags" FASTRNN_EXTRA_LDFLAGS="-fsanitize=$san" \
              "$py" setup.py build_ext --inplace >"$dir/logs/build-$san.txt" 2>&1); then
        tail -30 "$dir/logs/build-$san.txt" >&2
        exit 2
    fi

    preload=
    if [ -n "$runtime" ]; then
        lib="$($cc -print-file-name=$runtime)"
        if [ ! -e "$lib" ]; then
            echo "sanitize.sh: $cc has no $runtime; install the compiler's sanitizer runtime" >&2
            exit 2
        fi
        preload="$lib:$($cc -print-file-name=libstdc++.so)${LD_PRELOAD:+:$LD_PRELOAD}"
    fi

    echo "sanitize.sh: [$san] running pytest in $src"
    start=$(date +%s)
    set +e
    (cd "$src" && env ${preload:+LD_PRELOAD="$preload"} "$opts" \
        "$py" -m pytest -q -p no:cacheprovider "${@:-tests/}")
    rc=$?
    set -e
    echo "sanitize.sh: [$san] pytest exit status $rc after $(( $(date +%s) - start )) s"
    [ $rc -ne 0 ] && status=1
done

reports=$(find "$dir/logs" -name 'asan.*' -o -name 'ubsan.*' -o -name 'tsan.*' | sort)
if [ -n "$reports" ]; then
    echo "sanitize.sh: sanitizer reports:"
    for f in $reports; do
        echo "---- $f"
        head -40 "$f"
    done
    n=$(cat $reports | grep -c -E 'runtime error|ERROR: AddressSanitizer|WARNING: ThreadSanitizer' || true)
    echo "sanitize.sh: $(echo "$reports" | wc -l) report file(s), $n report(s)"
    exit 1
fi
echo "sanitize.sh: no sanitizer reports"
exit $status
