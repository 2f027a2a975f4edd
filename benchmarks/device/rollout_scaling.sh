#!/usr/bin/env bash
# Issue 30, item 7 on a 16-core host (the lent H200 machine; no GPU use): cadence's rollout backend against raw
# mujoco.rollout at 16, 8 and 4 physics threads (benchmarks/batched_rollout.py, Hopper-v5, 256 worlds).
#
#   run(carry=[".whl"], timeout_s=240, command="bash benchmarks/device/rollout_scaling.sh")
#
# What comes back in $OUT: batched_rollout_<T>threads.json per thread count and scaling.log.
# Rehearsal here: DRY=1 bash benchmarks/device/rollout_scaling.sh (0.2 s windows, 2 threads, into /tmp/out).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MUJOCO_GL=disable OMP_NUM_THREADS=1
if [ "${DRY:-0}" = 1 ]; then
  PY=.venv/bin/python; THREADS=${THREADS:-2}; SECONDS_EACH=0.2; REPEATS=1
else
  PY=python3; THREADS=${THREADS:-16 8 4}; SECONDS_EACH=${SECONDS_EACH:-1.5}; REPEATS=${REPEATS:-3}
  # shellcheck disable=SC2046
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    $(ls .whl/*.whl | grep -v warp) || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
nproc | tee "$OUT/scaling.log"
for t in $THREADS; do
  timeout 120 "$PY" benchmarks/batched_rollout.py --threads "$t" --repeats "$REPEATS" --seconds "$SECONDS_EACH" \
    --fas-episodes 0 2>&1 | tee -a "$OUT/scaling.log"
  cp benchmarks/results/batched_rollout.json "$OUT/batched_rollout_${t}threads.json"
done
[ "${DRY:-0}" = 1 ] && git checkout -q benchmarks/results/batched_rollout.json benchmarks/results/batched_rollout.png
exit 0
