#!/usr/bin/env bash
# Run a long GPU job across several device calls without restarting it (no recompilation,
# no lost optimizer state between calls): the first call starts it in the background, every
# call (the same command) then follows its log until POLL_SECONDS have passed or it ended.
#
#   bash engine/data/gpu_bg.sh NAME COMMAND...        e.g.
#   bash engine/data/gpu_bg.sh global env NPROC=2 STOP_MINUTES=120 \
#       bash engine/data/gpu_run.sh global --max_steps=1100 --max_minutes=0
#
# The job runs under setsid with its own OUT (/tmp/bg-NAME/out); when it has ended, its
# files are copied into this call's $OUT and the call exits with the job's status; while it
# runs, the call exits 3. A device machine goes back about 30 s after a call ends, even with
# a job running, and the next machine starts bare: make the next call at once.
set -uo pipefail
NAME=${1:?usage: gpu_bg.sh NAME COMMAND...}
shift
cd "$(dirname "$0")/../.."
DIR=/tmp/bg-$NAME
POLL=${POLL_SECONDS:-540}
mkdir -p "$DIR/out"
if [ ! -f "$DIR/pid" ]; then
  [ $# -gt 0 ] || { echo "no command to start" >&2; exit 2; }
  # The whole wrapper in its own session, so that the end of this call kills neither the
  # job nor the line that records its status.
  DIR="$DIR" setsid nohup bash -c 'OUT="$DIR/out" "$@" > "$DIR/log" 2>&1; echo $? > "$DIR/rc"' \
    _ "$@" < /dev/null > /dev/null 2>&1 &
  echo $! > "$DIR/pid"
  echo "== started $NAME: $*" >&2
fi
T0=$SECONDS
while [ ! -f "$DIR/rc" ] && [ $((SECONDS - T0)) -lt "$POLL" ]; do sleep 2; done
grep -E "^step|^== |exported|Error|error" "$DIR/log" | tail -6
if [ -f "$DIR/rc" ]; then
  cp -r "$DIR/out/." "${OUT:-runs/gpu-out}/" 2>/dev/null
  echo "== $NAME ended: exit $(cat "$DIR/rc")" >&2
  exit "$(cat "$DIR/rc")"
fi
echo "== $NAME still running after $((SECONDS - T0)) s of this call: call again at once" >&2
exit 3
