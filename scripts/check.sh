#!/bin/bash
# make check: build every variant and run every suite, then print one
# closing line "check: N passed, N failed" (N counts test programs and
# pytest cases).  Exits non-zero if anything failed.
#
#   build        gcc -O2 -g -Werror    unit tests, functional tests
#   build-tsan   clang -Wthread-safety -Werror, ThreadSanitizer: the clang
#                build (it proves the annotations), stress and unit tests
#   build-asan   ASan + UBSan          stress and unit tests
set -u
cd "$(dirname "$0")/.."

passed=0
failed=0
failures=()
jobs=${CHECK_JOBS:-2}

clang_cc=clang
for c in clang-19 clang-22; do
    if command -v "$c" >/dev/null 2>&1; then clang_cc=$c; break; fi
done

note_fail() {
    failed=$((failed + 1))
    failures+=("$1")
}

# setup DIR [meson args...]: configure (once) and build a variant.
setup() {
    local dir=$1; shift
    if [ ! -e "$dir/build.ninja" ]; then
        if ! meson setup "$dir" "$@" >"$dir.setup.log" 2>&1; then
            cat "$dir.setup.log"
            note_fail "configure $dir"
            return 1
        fi
        rm -f "$dir.setup.log"
    fi
    if ! ninja -C "$dir" >"$dir.build.log" 2>&1; then
        cat "$dir.build.log"
        note_fail "build $dir"
        return 1
    fi
    rm -f "$dir.build.log"
    echo "== built $dir"
}

# suite DIR SUITE: run one meson test suite and add up its results.
suite() {
    local dir=$1 name=$2 out ok fail
    echo "== $dir: suite $name"
    out=$(meson test -C "$dir" --suite "$name" --num-processes "$jobs" \
          --print-errorlogs 2>&1)
    echo "$out" | grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Timeout|Expected Fail|Unexpected Pass|Skipped):' 
    ok=$(echo "$out" | sed -n 's/^Ok: *\([0-9]*\).*/\1/p')
    fail=$(echo "$out" | sed -n 's/^\(Fail\|Timeout\|Unexpected Pass\): *\([0-9]*\).*/\2/p' |
           awk '{s += $1} END {print s + 0}')
    skip=$(echo "$out" | sed -n 's/^Skipped: *\([0-9]*\).*/\1/p')
    if [ -z "$ok" ]; then
        echo "$out" | tail -40
        note_fail "$dir/$name: no result"
        return
    fi
    if [ "${skip:-0}" -gt 0 ]; then
        # A skipped test is a test that did not run: count it as a failure.
        echo "$out" | grep -i skip
        fail=$((fail + skip))
    fi
    passed=$((passed + ok))
    if [ "$fail" -gt 0 ]; then
        echo "$out" | grep -B2 -A40 -E 'FAIL|TIMEOUT' | head -200
        failed=$((failed + fail))
        failures+=("$dir/$name: $fail failed")
    fi
}

# functional [BUILD [pytest args...]]: pytest against the real daemon of
# BUILD (default build/; Debian's pytest lives in /usr/bin/python3).
functional() {
    local out p f build=${1:-build}
    shift || true
    echo "== functional tests (pytest) on $build $*"
    out=$(BLOCKD_BUILD="$PWD/$build" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
          "${@:-tests/functional}" 2>&1)
    # A failure shows its whole traceback (flaky ones must be diagnosable).
    if echo "$out" | grep -q '^FAILED'; then
        echo "$out" | tail -200
    else
        echo "$out" | tail -30
    fi
    p=$(echo "$out" | grep -oE '[0-9]+ passed' | tail -1 | grep -oE '[0-9]+')
    f=$(echo "$out" | grep -oE '[0-9]+ (failed|error|errors)' | awk '{s += $1} END {print s + 0}')
    s=$(echo "$out" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+')
    if [ -z "$p" ] && [ "$f" -eq 0 ]; then
        note_fail "functional: no result"
        return
    fi
    passed=$((passed + ${p:-0}))
    f=$((f + ${s:-0}))
    if [ "$f" -gt 0 ]; then
        failed=$((failed + f))
        failures+=("functional: $f failed or skipped")
    fi
}

start=$(date +%s)

# The graph lock's production ordering (readers with compiler barriers,
# the writer's membarrier) in the production build: a litmus run that
# counts any reader inside while the writer is.  The sanitizer builds run
# it too, TSan on the seq-cst fallback it can model.
litmus() {
    echo "== build: stress-graph-lock, membarrier ordering, 100000 write locks"
    if STRESS_WRLOCKS=100000 build/tests/stress/stress-graph-lock >build/litmus.log 2>&1; then
        # A kernel without membarrier (some sandboxes) runs the fallback.
        grep "graph lock ordering" build/litmus.log
        passed=$((passed + 1))
    else
        tail -30 build/litmus.log
        note_fail "graph lock litmus (build/litmus.log)"
    fi
}

if setup build; then
    suite build unit
    litmus
    # Two test files at a time (pytest-xdist; each file in one worker, in
    # order).  The VM with two queues over two iothreads boots once, under
    # TSan (below), where its threads are worth watching.
    functional build tests/functional -n 2 --dist loadfile \
        --deselect "tests/functional/test_vm.py::test_vm_on_vhost_user_blk[blockd-2queues-iothreads]"
fi

# The analysis must reject a known violation, or the clang build proves nothing.
tsa_negative() {
    local out
    echo "== clang thread-safety analysis rejects tests/tsa/violation.c"
    out=$($clang_cc -fsyntax-only -Iinclude -Werror -Wthread-safety \
          -Wno-thread-safety-precise -DBLOCKD_TSA_FIELDS $tsa_extra tests/tsa/violation.c 2>&1)
    # One error per function of violation.c, the graph lock's included.
    if [ "$(echo "$out" | grep -c 'requires holding')" -ge 4 ] &&
       echo "$out" | grep -q "reading variable 'backing' requires holding graph-lock" &&
       echo "$out" | grep -q "writing variable 'perm' requires holding graph-lock 'graph_lock' exclusively"; then
        passed=$((passed + 1))
    else
        echo "$out"
        note_fail "clang thread-safety analysis did not reject tests/tsa/violation.c"
    fi
}

# Ceph's libraries are not instrumented: tests/tsan.supp says what of them
# is ignored.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp ${TSAN_OPTIONS:-}"
# clang's TSan runtime: gcc 12's reports false races on long fiber-switch
# sequences (seen after ~100k coroutine switches), clang 19's does not.
if CC=$clang_cc setup build-tsan -Db_sanitize=thread -Db_lundef=false; then
    # This is the clang build: -Wthread-safety -Werror proved the annotations.
    tsa_extra=""
    if grep -q -- '-fexperimental-late-parse-attributes' build-tsan/build.ninja; then
        tsa_extra="-fexperimental-late-parse-attributes"
    fi
    tsa_negative
    # The stress programs run shorter here than on their own (STRESS_SECONDS,
    # STRESS_ENGINE_SECONDS: set them for longer runs).
    STRESS_SECONDS=${STRESS_SECONDS:-6} STRESS_ENGINE_SECONDS=${STRESS_ENGINE_SECONDS:-5} \
        suite build-tsan stress
    suite build-tsan unit
    # qcow2 metadata shared by many requests and served from an iothread.
    functional build-tsan tests/functional/test_qcow2.py -k "iothread or many_requests"
    # NBD connections served in iothreads: buffers, reply batching, churn.
    functional build-tsan tests/functional/test_nbd.py -k "iothread"
    # A qcow2 node grows and shrinks (drained) while a client writes.
    functional build-tsan tests/functional/test_resize.py -k "writes"
    functional build-tsan tests/functional/test_snapshot.py
    # Snapshots, stream and commit while a client writes from an iothread.
    functional build-tsan tests/functional/test_chain_flow.py \
        tests/functional/test_internal_snapshot.py
    # Nodes, jobs and exports moving between threads while they work; the
    # stress matrix for 12 s (BLOCKD_STRESS_SECONDS for longer).
    functional build-tsan tests/functional/test_thread_moves.py
    # A VM's vhost-user-blk queues served by two iothreads, mirrored; the
    # FUSE device read in an iothread.
    functional build-tsan tests/functional/test_vm.py -k iothreads
    functional build-tsan tests/functional/test_fuse.py -k iothread
    # TLS sessions moving with their connections to two iothreads.
    functional build-tsan tests/functional/test_nbd_tls.py -k iothreads
    # An nbd node's requests from two iothreads, and its reconnection.
    functional build-tsan tests/functional/test_nbd_driver.py -k "iothreads or reconnect"
    # Copy-on-read's write back against guest writes on the same range;
    # throttled requests let go by a drain from the main thread.
    functional build-tsan tests/functional/test_copy_on_read.py -k writes_during
    functional build-tsan tests/functional/test_throttle.py -k drain
    # The rbd driver: librbd's threads hand completions back to the
    # requests' own threads, the node moving between them.
    functional build-tsan tests/functional/test_rbd.py -k iothreads
    BLOCKD_STRESS_SECONDS=${BLOCKD_STRESS_SECONDS:-12} \
        functional build-tsan tests/functional/test_thread_stress.py
fi

export ASAN_OPTIONS="detect_leaks=1 abort_on_error=1 ${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1 print_stacktrace=1 ${UBSAN_OPTIONS:-}"
if setup build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
    # Shorter than under TSan: ASan looks for memory errors, which need
    # no long interleavings to show.
    STRESS_SECONDS=${STRESS_SECONDS:-4} STRESS_ENGINE_SECONDS=${STRESS_ENGINE_SECONDS:-4} \
        suite build-asan stress
    suite build-asan unit
    # Hostile qcow2 images against the sanitized daemon: no crash, no
    # out-of-bounds access, clear errors.
    functional build-asan tests/functional/test_qcow2.py \
        -k "corrupt or unknown_feature or dirty"
    # Hostile NBD clients against the sanitized daemon.
    functional build-asan tests/functional/test_nbd_hostile.py tests/functional/test_nbdsh.py \
        tests/functional/test_nbd_errors_compat.py tests/functional/test_thread_moves.py \
        tests/functional/test_chain_flow.py tests/functional/test_reopen.py \
        tests/functional/test_snapshot_sync.py tests/functional/test_internal_snapshot.py \
        tests/functional/test_bitmaps.py
    # Hostile bitmap directories, write errors while bitmaps are stored,
    # fleecing's concurrent copies and reads.
    functional build-asan tests/functional/test_bitmaps_persistent.py \
        -k "corrupt or write_errors or crash"
    functional build-asan tests/functional/test_fleecing.py -k restores
    # Compressed writes through the compress filter (RMW of partial clusters).
    functional build-asan tests/functional/test_compress_filter.py
    # The FUSE export: requests from the kernel, a stale mount.
    functional build-asan tests/functional/test_fuse.py
    # The nbd driver: hostile servers (handshakes, replies), reconnection;
    # host_device on a loop device; the copy-on-read and preallocate filters.
    functional build-asan tests/functional/test_nbd_driver.py -k "hostile or retry or always"
    functional build-asan tests/functional/test_host_device.py tests/functional/test_copy_on_read.py \
        tests/functional/test_preallocate.py tests/functional/test_throttle.py \
        tests/functional/test_secret.py -k "not iops"
    # quorum's votes and repairs, blkverify's mismatch (no abort).
    functional build-asan tests/functional/test_quorum.py -k "rewrite or blkverify"
    # LUKS: hostile headers, key slots added and erased; encrypted qcow2
    # (its hostile crypto headers, copy-on-write through the cipher); a
    # raw data file's misplaced cluster.
    functional build-asan tests/functional/test_luks.py -k "hostile or amend"
    functional build-asan tests/functional/test_qcow2_encrypt.py \
        tests/functional/test_qcow2_data_file.py -k "hostile or interchange or corrupt"
    # The vhost-user-blk export: hostile guests and front-ends.
    functional build-asan tests/functional/test_vhost_user_hostile.py \
        tests/functional/test_vhost_user_blk.py -k "not qsd and not matches"
    # TLS: impostors, denied names, bad credentials, STARTTLS misuse.
    functional build-asan tests/functional/test_nbd_tls.py \
        -k "(impostors and qsd) or starttls or bad_credentials or driver"
    # Hostile QMP input (the JSON stream) against the sanitized daemon.
    functional build-asan tests/functional/test_qmp_hostile.py \
        tests/functional/test_qsd_compat_protocol.py
    BLOCKD_STRESS_SECONDS=${BLOCKD_STRESS_SECONDS:-10} \
        functional build-asan tests/functional/test_thread_stress.py
fi

echo
echo "make check took $(( $(date +%s) - start )) s"
for f in "${failures[@]}"; do
    echo "FAILED: $f"
done
echo "check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
