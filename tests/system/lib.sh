# Shared helpers of the system test scripts (sourced).
# Every check prints one line, "ok - NAME" or "not ok - NAME: why", and is counted.
passed=0
failed=0
failures=()

ok() { passed=$((passed + 1)); echo "ok - $1"; }
not_ok() { failed=$((failed + 1)); failures+=("$1"); echo "not ok - $1" >&2; }

# check NAME COMMAND...: the command's exit status decides.
check() {
    local name="$1"; shift
    if "$@"; then ok "$name"; else not_ok "$name"; fi
}

# wait_for SECONDS DESCRIPTION COMMAND...: re-run COMMAND (every 0.25 s) until it succeeds
# or the deadline passes. The system test drives real processes and containers, so it waits
# on their observable state (HTTP answers, unit properties) with a deadline; it never sleeps
# for a fixed time instead of checking.
wait_for() {
    local seconds="$1" what="$2"; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "timed out after ${seconds}s waiting for: $what" >&2
            return 1
        fi
        sleep 0.25
    done
}

# http_ok URL: 200 within 2 s (the host's python3, no curl needed).
http_ok() {
    python3 - "$1" <<'PY'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}

# status_field PORT FIELD: one field of a member's /status JSON.
status_field() {
    python3 - "$1" "$2" <<'PY'
import json, sys, urllib.request
print(json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/status", timeout=2))[sys.argv[2]])
PY
}

# summary PART: the part's counts, also appended to $SYSTEM_TEST_COUNTS for run.sh's total.
summary() {
    echo "system-test $1: $passed passed, $failed failed"
    for f in "${failures[@]}"; do echo "  failed: $f"; done
    if [ -n "${SYSTEM_TEST_COUNTS:-}" ]; then echo "$passed $failed" >> "$SYSTEM_TEST_COUNTS"; fi
    [ "$failed" = 0 ]
}
