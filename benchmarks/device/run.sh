#!/usr/bin/env bash
# Issue 32's device run: install the carried wheels, check graphed updates on the GPU, run the GPU benchmarks.
# About 7 minutes on one H200; every step has its own timeout, so the run ends even when one step hangs.
#
# Prepare here: bash benchmarks/device/fetch_wheels.sh (fills .whl/, .whl2/, .whl3/). The device calls, each within
# the 30 s a machine stays warm after the previous one (the warp parts wait in /tmp/parts on that machine):
#   1. run(carry=[".whl2"], timeout_s=120, command="mkdir -p /tmp/parts && cp .whl2/* /tmp/parts/ && ls -l /tmp/parts")
#   2. run(carry=[".whl3"], timeout_s=60,  command="cp .whl3/* /tmp/parts/ && ls -l /tmp/parts")
#   3. run(carry=[".whl"],  timeout_s=560, command="bash benchmarks/device/run.sh")
#   then give_back. Without Warp: call 3 alone (the warp tests and benchmarks/gpu.py are then skipped).
# What comes back in $OUT: run.log (everything printed), tests.xml, gpu_training.json/.png, gpu.json/.png.
#
# Rehearsal on a CPU (here): DRY=1 bash benchmarks/device/run.sh   (checks the wheels and their reassembly, installs
# them for Python 3.12 into a scratch folder, runs the tests and both benchmarks at smoke size on the CPU)
#
# Knobs (environment): T_TESTS T_WARP T_TRAIN T_GPU T_LEARN (seconds per step), LEARN_BUDGET, STEPS, SEEDS,
# THREADS (torch threads of the CPU path; 8), GPU_ARGS (extra arguments of benchmarks/gpu.py), SITE, PY.
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY=${DRY:-0}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
LOG="$OUT/run.log"
SITE=${SITE:-/tmp/site}
if [ "$DRY" = 1 ]; then
  PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
  DEVICE=cpu; SMOKE=--smoke; SITE=$(mktemp -d); THREADS=${THREADS:-1}
  T_TESTS=${T_TESTS:-300}; T_WARP=${T_WARP:-300}; T_TRAIN=${T_TRAIN:-400}; T_GPU=${T_GPU:-400}; T_LEARN=${T_LEARN:-300}
else
  PY=${PY:-python3}
  DEVICE=cuda; SMOKE=; THREADS=${THREADS:-8}
  T_TESTS=${T_TESTS:-80}; T_WARP=${T_WARP:-60}; T_TRAIN=${T_TRAIN:-120}; T_GPU=${T_GPU:-110}; T_LEARN=${T_LEARN:-130}
fi
LEARN_BUDGET=${LEARN_BUDGET:-$((T_LEARN - 50))}
STEPS=${STEPS:-1500}
SEEDS=${SEEDS:-1 2 3}
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-disable}

say() { echo "[run.sh +${SECONDS}s] $*" | tee -a "$LOG"; }
step() {  # step SECONDS NAME COMMAND...: run under a timeout, log everything, never stop the script
  local limit=$1 name=$2; shift 2
  say "$name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  say "$name: exit $rc$( [ "$rc" = 124 ] && echo ' (timed out)')"
}

# --- 1. wheels ------------------------------------------------------------------------------------------------------
wheels=()
[ -d .whl ] && wheels+=(.whl/*.whl)
# Warp came split across calls: parts left in /tmp/parts by earlier calls, or carried here (.whl/, .whl2/, ...)
declare -A seen=()
parts=()
for f in /tmp/parts/*.part-* .whl/*.part-* .whl[2-9]/*.part-*; do
  [ -f "$f" ] || continue
  b=$(basename "$f")
  [ -n "${seen[$b]:-}" ] && continue
  seen[$b]=1
  parts+=("$f")
done
if [ ${#parts[@]} -gt 0 ]; then
  mapfile -t parts < <(for f in "${parts[@]}"; do echo "$(basename "$f") $f"; done | sort | cut -d' ' -f2-)
  name=$(basename "${parts[0]}"); name=${name%.part-*}
  mkdir -p /tmp/wheels && cat "${parts[@]}" > "/tmp/wheels/$name"
  if (cd /tmp/wheels && grep " $name\$" "$OLDPWD/.whl/SHA256SUMS" | sed "s| ./| |" | sha256sum -c --quiet -); then
    wheels+=("/tmp/wheels/$name")
    say "warp: $name from ${#parts[@]} parts, checksum ok"
  else
    say "warp: $name from ${#parts[@]} parts FAILS its checksum (a part missing?): skipped"
  fi
else
  say "warp: no parts here or in /tmp/parts: warp tests and benchmarks/gpu.py are skipped"
fi
if [ -f .whl/SHA256SUMS ]; then
  (cd .whl && grep -v warp_lang SHA256SUMS | sha256sum -c --quiet -) && say "wheels: checksums ok" \
    || say "wheels: CHECKSUM MISMATCH in .whl/"
fi
if [ ${#wheels[@]} -gt 0 ]; then
  say "installing ${#wheels[@]} wheels into $SITE"
  extra=()
  [ "$DRY" = 1 ] && extra=(--only-binary=:all: --python-version 3.12 --implementation cp
                           --platform manylinux_2_28_x86_64 --platform any)  # here: unpack only, for Python 3.12
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "${extra[@]}" "${wheels[@]}" 2>&1 | tee -a "$LOG"
  ls "$SITE" | tr '\n' ' ' | tee -a "$LOG"; echo | tee -a "$LOG"
fi
if [ "$DRY" = 1 ]; then
  rm -rf "$SITE"  # the rehearsal's install was for 3.12; here the .venv's packages are used
  export PYTHONPATH=$PWD
else
  export PYTHONPATH=$SITE:$PWD
fi

# --- 2. what is here ------------------------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null && nvidia-smi 2>&1 | tee -a "$LOG"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
for name in ("numpy", "mujoco", "gymnasium", "stable_baselines3", "tomli_w", "warp", "mujoco_warp", "cadence"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '?')} {m.__file__}")
    except Exception as e:  # noqa: BLE001
        print(f"  {name}: MISSING ({type(e).__name__}: {e})")
EOF
have_warp=0
"$PY" -c "import warp, mujoco_warp" >/dev/null 2>&1 && have_warp=1

# --- 3. correctness on the GPU: graphed updates against eager ones (all tests, to see every failure at once) ----------
step "$T_TESTS" tests "$PY" -m pytest -q -rs -p no:cacheprovider --timeout 120 --junitxml="$OUT/tests.xml" \
  tests/test_cuda_graphs.py
if [ $have_warp = 1 ] && [ -f tests/test_warp.py ]; then
  step "$T_WARP" warp-tests "$PY" -m pytest -x -q -rs -p no:cacheprovider --timeout 120 tests/test_warp.py
fi

# --- 4. benchmarks: throughput first (nothing else on the GPU meanwhile), learning parity last ------------------------
step "$T_TRAIN" gpu-training "$PY" benchmarks/gpu_training.py --device "$DEVICE" $SMOKE \
  --sections sac_steps srl_updates --steps "$STEPS" --threads "$THREADS" --out "$OUT"
if [ $have_warp = 1 ] && [ -f benchmarks/gpu.py ]; then
  # gpu.py's own sections only: gpu_training.py's ran above
  step "$T_GPU" gpu "$PY" benchmarks/gpu.py --device "$DEVICE" $SMOKE --sections steps fas collection \
    --out "$OUT" ${GPU_ARGS:-}
fi
# shellcheck disable=SC2086
step "$T_LEARN" learning "$PY" benchmarks/gpu_training.py --device "$DEVICE" $SMOKE --sections learning \
  --learn-modes graphs eager --seeds $SEEDS --learn-budget "$LEARN_BUDGET" --threads "$THREADS" --out "$OUT"

say "done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
