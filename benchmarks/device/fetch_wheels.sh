#!/usr/bin/env bash
# Fetch the wheels the lent H200 lacks, for benchmarks/device/run.sh (issue 32).
#
# That machine has Python 3.12, torch 2.11 with CUDA, numpy, absl-py, etils, cloudpickle, typing-extensions,
# tensorboard, matplotlib, h5py, scipy, scikit-learn, rich, pytest (/work/.library/device/KINDS.md lists them) and no
# network. Missing for cadence's GPU tests and benchmarks: mujoco, gymnasium (+ farama-notifications, and glfw, which
# gymnasium.envs.mujoco imports), tomli-w (cadence.config), stable-baselines3 (the SB3 comparison), mujoco-warp and
# warp-lang (the warp backend). Versions are this project's .venv's. Each wheel's Requires-Dist is printed below.
#
# One device call carries at most 64 MiB with the working tree (about 11 MiB), so:
#   .whl/   the small wheels (~29 MiB), SHA256SUMS and the short last part of warp-lang;
#   .whl2/, .whl3/  warp-lang, repacked with LZMA members (142 -> 101 MiB; still a valid wheel, same files) and split
#           into parts of $PART (48 MiB: 48 + 48 + 5); run.sh puts them back together with cat and checks the sum.
#
#   bash benchmarks/device/fetch_wheels.sh            # from the repository root; REPACK=0 skips the LZMA repack,
#                                                     # WARP_WHEEL=path uses that warp-lang wheel as it is
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PY=${PY:-python3}
PART=${PART:-48m}
REPACK=${REPACK:-1}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
SMALL=(mujoco==3.17.0 gymnasium==1.4.0 farama-notifications==0.0.6 glfw==2.11.0 tomli-w==1.2.0
       stable-baselines3==2.9.2 mujoco-warp==4.0.0)
WARP=warp-lang==1.19.0

for d in /.whl/ /.whl2/ /.whl3/; do
  grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
download() {  # download DEST SPEC...
  local dest=$1; shift
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$dest" "$@"
}

rm -rf .whl .whl2 .whl3 && mkdir -p .whl
download .whl "${SMALL[@]}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -n "${WARP_WHEEL:-}" ]; then  # a warp-lang wheel already at hand (e.g. repacked before): used as it is
  cp "$WARP_WHEEL" "$tmp/" && REPACK=0
else
  download "$tmp" "$WARP"
fi
warp=$(ls "$tmp"/warp_lang-*.whl)
name=$(basename "$warp")
if [ "$REPACK" = 1 ]; then
  echo "repacking $name with LZMA members (a few CPU minutes)"
  "$PY" benchmarks/device/repack_lzma.py "$warp" "$tmp/lzma-$name" >/dev/null
  mv "$tmp/lzma-$name" "$warp"
fi
(cd .whl && sha256sum ./*.whl) > .whl/SHA256SUMS
(cd "$tmp" && sha256sum "$name") >> .whl/SHA256SUMS
split -b "$PART" -a 2 "$warp" "$tmp/$name.part-"
i=2
for part in "$tmp/$name".part-*; do  # the first two parts get a call each; a short rest rides with .whl/
  if [ $i -le 3 ]; then mkdir -p ".whl$i" && mv "$part" ".whl$i/"; else mv "$part" .whl/; fi
  i=$((i + 1))
done

echo "== Requires-Dist (extras left out); the device has numpy, absl-py, etils, cloudpickle, typing-extensions, torch"
for w in .whl/*.whl "$warp"; do
  deps=$( (unzip -p "$w" '*.dist-info/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true) \
    | cut -d' ' -f2- | tr '\n' ' ')
  echo "$(basename "$w"): ${deps:-none}"
done
echo "== sizes (each call: one folder + the working tree, under 64 MiB)"
tree=$( (git ls-files; git ls-files --others --exclude-standard) | sort -u | while read -r f; do
  [ -f "$f" ] && stat -c %s "$f"; done | awk '{s += $1} END {print s}')
printf '%-8s %6.1f MiB\n' "tree" "$(echo "$tree / 1048576" | bc -l)"
for d in .whl .whl2 .whl3; do
  [ -d "$d" ] || continue
  size=$(du -sb "$d" | cut -f1)
  printf '%-8s %6.1f MiB  (+ tree: %5.1f MiB)\n' "$d" "$(echo "$size / 1048576" | bc -l)" \
    "$(echo "($size + $tree) / 1048576" | bc -l)"
done
