#!/usr/bin/env bash
# Issue 28's per-option ablation of HyperCRL's reference preset (benchmarks/continual_mbrl.py --ablation: the preset
# and, per option, the preset with that option at cadence's default; 3 seeds; 42 runs) on the lent H200, in one
# device call. The hypernetwork's updates are most of a run's time on a CPU (75%, profiled); on the GPU each run's
# kernels are tiny, so many runs share it at once under MPS (without MPS their kernels would time-slice).
#
#   run(carry=[".whl"], timeout_s=600, command="bash benchmarks/device/ablation.sh")
#
# .whl/ comes from benchmarks/device/fetch_wheels.sh (mujoco, gymnasium, ... for Python 3.12). What comes back in
# $OUT: ablation.log, continual_mbrl_ablation.json/.png, the report folder and the finished runs (runs.tar.gz, no
# checkpoints). A sweep cut by its time limit leaves the finished methods: the runs go method by method, so those
# are whole (every seed); the summary takes only them (--no-train).
#
# Tried once (2026-12-04): the cuda smoke found that HyperCRL could not plan on a GPU (fixed since: the CEM planner
# takes the loop's CPU generator), and the CPU fallback, 16 runs at once on the host's cores, finished none in 470 s.
# The committed ablation ran on 2 CPU cores instead. The CUDA path under MPS is untested at scale.
#
# Rehearsal on a CPU (here): DRY=1 bash benchmarks/device/ablation.sh  (tiny runs, CPU, into a scratch folder)
#
# Knobs (environment): WORKERS (21), T_SWEEP (seconds for the sweep; 470), STEPS (steps per task; 3000), SEEDS.
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY=${DRY:-0}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
LOG="$OUT/ablation.log"
say() { echo "[ablation.sh +${SECONDS}s] $*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1 MUJOCO_GL=disable OMP_NUM_THREADS=1
SEEDS=${SEEDS:-1 2 3}
if [ "$DRY" = 1 ]; then
  PY=${PY:-.venv/bin/python}; STEPS=${STEPS:-320}; WORKERS=${WORKERS:-2}; T_SWEEP=${T_SWEEP:-60}
  RUNS=$(mktemp -d); DEVICE=cpu
else
  PY=${PY:-python3}; STEPS=${STEPS:-3000}; WORKERS=${WORKERS:-21}; T_SWEEP=${T_SWEEP:-470}
  RUNS=/tmp/runs/continual_mbrl_ablation
  wheels=$(ls .whl/*.whl | grep -v -e warp)
  say "installing: $(echo "$wheels" | xargs -n1 basename | tr '\n' ' ')"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $wheels \
    2>&1 | tee -a "$LOG"
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv 2>&1 | tee -a "$LOG"
  # MPS lets the runs' kernels overlap on the GPU
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d; then say "MPS daemon started"
  else say "no MPS: the runs' kernels time-slice"; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; fi
  # a 4-task-step smoke on cuda; any failure sends the whole ablation to the CPU cores instead
  DEVICE=cuda
  if ! timeout 90 "$PY" -m cadence train hypercrl --sequence halfcheetah-motor-3 --steps-per-task 96 \
      --run-dir /tmp/smoke --no-progress --set train.device=cuda --set train.random_steps=48 \
      --set train.worlds=16 --set train.train_every=48 --set train.episode_steps=20 --set train.eval_episodes=1 \
      --set train.heldout=200 --set train.task_gap=0 --set agent.horizon=5 --set agent.samples=20 \
      --set agent.elites=4 --set agent.iterations=2 --set agent.preset=reference \
      --set "agent.hidden_sizes=[200, 200]" >>"$LOG" 2>&1; then
    say "cuda smoke FAILED (see above): the ablation runs on the CPU cores"; DEVICE=cpu; WORKERS=16
    [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  else
    say "cuda smoke passed in the log above"
  fi
fi
say "python $("$PY" -c 'import platform, torch; print(platform.python_version(), "torch", torch.__version__)')"
say "sweep: device $DEVICE, $WORKERS workers, $STEPS steps per task, seeds $SEEDS, at most ${T_SWEEP}s"
# shellcheck disable=SC2086
timeout --kill-after=20 "$T_SWEEP" "$PY" benchmarks/continual_mbrl.py --ablation --device "$DEVICE" \
  --workers "$WORKERS" --steps-per-task "$STEPS" --seeds $SEEDS --runs "$RUNS" 2>&1 | tail -n 60 >>"$LOG"
say "sweep ended: $(grep -l '"done"' "$RUNS"/*/seed=*/sweep_run.json 2>/dev/null | wc -l) runs done"
# shellcheck disable=SC2086
"$PY" benchmarks/continual_mbrl.py --ablation --no-train --device "$DEVICE" --steps-per-task "$STEPS" \
  --seeds $SEEDS --runs "$RUNS" 2>&1 | tail -n 30 | tee -a "$LOG"
cp benchmarks/results/continual_mbrl_ablation.json benchmarks/results/continual_mbrl_ablation.png "$OUT"/ \
  2>/dev/null
tar -czf "$OUT/report.tar.gz" -C benchmarks/results continual_mbrl_ablation_report 2>/dev/null
tar -czf "$OUT/runs.tar.gz" --exclude=checkpoints -C "$(dirname "$RUNS")" "$(basename "$RUNS")" 2>/dev/null
say "done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
[ "$DRY" = 1 ] && rm -rf "$RUNS"
exit 0
