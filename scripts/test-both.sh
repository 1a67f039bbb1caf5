#!/usr/bin/env bash
# Every test twice, at the same time: on the compiled modules here, and on the
# pure-Python ones (REFRACTIUM_PURE=1, which every process the tests start
# inherits) in a network namespace of its own. The suite mostly waits on
# sockets and timers, so the two runs take little longer than one; the
# namespace gives the pure run a loopback of its own, so the ports the two
# runs pick never meet. Where no namespace can be made (not root and no user
# namespaces), the runs go one after the other.
#
#   scripts/test-both.sh BIN BUILT [pytest args...]
#     BIN:   the virtualenv's bin directory
#     BUILT: what the first run must find, "compiled" or "pure" (REFRACTIUM_COMPILE=0)
set -uo pipefail
bin=$1
built=$2
shift 2
# A job started with & ignores SIGINT and SIGQUIT, and so would every process it
# starts: the tests that stop a program with Ctrl-C's signal need it back.
pure=(env --default-signal=INT,QUIT REFRACTIUM_PURE=1 REFRACTIUM_BUILT=pure "$bin/python" -m pytest -q -p no:cacheprovider "$@")
compiled=(env REFRACTIUM_BUILT="$built" "$bin/python" -m pytest -q "$@")

isolate=""
for flags in "-n" "-rn"; do
  if unshare $flags sh -c 'ip link set lo up' 2>/dev/null; then
    isolate=$flags
    break
  fi
done

if [ -z "$isolate" ]; then
  echo "== no network namespace here: the compiled run, then the pure-Python one"
  "${compiled[@]}"
  first=$?
  "${pure[@]}"
  second=$?
  exit $(( first || second ))
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2016  # expanded by the inner shell
unshare $isolate sh -c 'ip link set lo up && exec "$@"' sh "${pure[@]}" >"$log" 2>&1 &
pure_pid=$!
echo "== the compiled modules (the pure-Python run goes on beside it)"
"${compiled[@]}"
first=$?
wait "$pure_pid"
second=$?
echo "== the same tests on the pure-Python modules (REFRACTIUM_PURE=1)"
cat "$log"
exit $(( first || second ))
