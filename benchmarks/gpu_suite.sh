#!/usr/bin/env bash
# The GPU suite in one call (at most ~9 minutes on one H200): bare steps, the ResNet20 recipe
# end to end alone on the device, then the fidelity grid, into one tarball of JSON + markdown.
#
# Usage (from the repository root, on the GPU machine):
#   benchmarks/gpu_suite.sh CIFAR10 WEIGHTS [OUT.tgz]
#     CIFAR10  the CIFAR-10 image folder (<root>/{train,test}/<class>/*.jpg) or one .tgz of it
#              (60,000 small files travel far better as one 20 MB archive)
#     WEIGHTS  the directory holding resnet20-12fca82f.th and resnet56-4bfd9763.th
#     OUT.tgz  where the results go (default: gpu_suite-<date>.tgz)
#   Environment: NRNP_WHEELS=DIR installs the wheels in DIR first (pip --no-deps), for images
#   that lack some of nrnp's dependencies (e.g. ml-collections); PYTHON (default python3);
#   SUITE_GRID=0 skips the fidelity grid; SUITE_BARE=0 skips stage 1. For a smoke run of the
#   plumbing on a CPU: SUITE_BARE=0 SUITE_RECON_STEPS=20 SUITE_DISTILL_STEPS=2
#   SUITE_TEST_LIMIT=200 (the budgets of stages 2 and 3; default the full recipes).
#
# Stages (each under `timeout`, so one stuck stage cannot eat the budget):
#   1. benchmarks/steps.py for ResNet20 h=180, ResNet56 h=320, ResNet18 h=1256 (65,536 kernels)
#   2. benchmarks/e2e.py: the full ResNet20 recipe (20,000 + 300 steps) alone on the GPU,
#      its wall time, CLI/bare step-rate ratios and host ms per step (goal: < 60 s in all)
#   3. the fidelity grid, concurrently: ResNet20 at widths x bit widths ($SUITE_WIDTHS, default
#      100 140 180; $SUITE_BITS, default int8 int6 int4: predictor.quantize) and ResNet56 h=320
#      at the full recipes, top-1 of the original and rebuilt nets on the same 10,000 test
#      images and the artefact's bytes (compare with benchmarks/results/baselines.md)
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,25p' "$0"
  exit 2
fi
data="$1"
weights="$(cd "$2" && pwd)"
out="${3:-gpu_suite-$(date +%Y%m%d-%H%M).tgz}"
python="${PYTHON:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/nrnp-gpu-suite.XXXX)"
results="$work/results"
mkdir -p "$results" "$work/runs"
cd "$repo"

if [[ -n "${NRNP_WHEELS:-}" ]]; then
  "$python" -m pip install --quiet --no-deps "$NRNP_WHEELS"/*.whl
fi
if [[ "$data" == *.tgz || "$data" == *.tar.gz ]]; then
  mkdir -p "$work/data"
  tar -xzf "$data" -C "$work/data"
  data="$(dirname "$(find "$work/data" -maxdepth 3 -type d -name train | head -1)")"
fi
data="$(cd "$data" && pwd)"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # several runs share the GPU in stage 3
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
r20="$weights/resnet20-12fca82f.th"
r56="$weights/resnet56-4bfd9763.th"
start=$(date +%s)
stage() { echo "[$(($(date +%s) - start))s] $*"; }
recon_steps="${SUITE_RECON_STEPS:-20000}"
distill_steps="${SUITE_DISTILL_STEPS:-2000}"
budget=()  # the grid runs' budgets when not the full recipes
[[ -n "${SUITE_RECON_STEPS:-}" ]] && budget+=(--config.reconstruct.steps="$recon_steps")
[[ -n "${SUITE_DISTILL_STEPS:-}" ]] && budget+=(--config.distill.steps="$distill_steps")
[[ -n "${SUITE_TEST_LIMIT:-}" ]] && budget+=(--config.data.test_limit="$SUITE_TEST_LIMIT")

if [[ "${SUITE_BARE:-1}" != 0 ]]; then
  stage "1/3 bare steps"
  timeout 120 "$python" benchmarks/steps.py --target=resnet20 --json="$results/steps_resnet20.json"
  timeout 120 "$python" benchmarks/steps.py --target=resnet56 --json="$results/steps_resnet56.json"
  timeout 180 "$python" benchmarks/steps.py --target=resnet18 --kernel_batch=65536 \
    --repeats=10 --json="$results/steps_resnet18.json" || stage "resnet18 steps failed or timed out"
fi

stage "2/3 the ResNet20 recipe end to end, alone"
e2e_start=$(date +%s)
timeout 240 "$python" benchmarks/e2e.py --config=c10_r20 --reconstruct_steps="$recon_steps" \
  --distill_steps="$distill_steps" --workdir="$work/runs/e2e_r20" \
  --json="$results/e2e_resnet20.json" -- --config.teacher.checkpoint="$r20" \
  --config.data.image_folder="$data" ${SUITE_TEST_LIMIT:+--config.data.test_limit=$SUITE_TEST_LIMIT}
echo "{\"wall_seconds\": $(($(date +%s) - e2e_start))}" > "$results/e2e_resnet20_wall.json"

if [[ "${SUITE_GRID:-1}" != 0 ]]; then
  stage "3/3 fidelity grid (concurrent)"
  pids=()
  for h in ${SUITE_WIDTHS:-100 140 180}; do
    for q in ${SUITE_BITS:-int8 int6 int4}; do
      timeout 330 "$python" -m nrnp.main --config=c10_r20 --workdir="$work/runs/r20_h${h}_$q" \
        --config.predictor.hidden=$h --config.predictor.quantize=$q \
        --config.teacher.checkpoint="$r20" --config.data.image_folder="$data" "${budget[@]}" \
        > "$work/runs/r20_h${h}_$q.log" 2>&1 &
      pids+=($!)
    done
  done
  timeout 330 "$python" -m nrnp.main --config=c10_r56 --workdir="$work/runs/r56_h320" \
    --config.teacher.checkpoint="$r56" --config.data.image_folder="$data" "${budget[@]}" \
    > "$work/runs/r56_h320.log" 2>&1 &
  pids+=($!)
  for pid in "${pids[@]}"; do wait "$pid" || stage "a grid run failed (see its log)"; done
fi

stage "summary"
"$python" - "$work" > "$results/summary.md" <<'EOF'
import glob, json, os, sys
work = sys.argv[1]
print('# nrnp GPU suite\n')
print('| step | target | h | step ms | GFLOP/s | roofline ratio |')
print('| --- | --- | --- | --- | --- | --- |')
for path in sorted(glob.glob(f'{work}/results/steps_*.json')):
    r = json.load(open(path))
    for kind in ('recon', 'distill'):
        if kind in r:
            k = r[kind]
            ratio = k.get('roofline_ratio', float('nan'))
            print(f"| {kind} | {r['target']} | {r['hidden']} | {k['step_ms']:.2f} | "
                  f"{k['gflops']:.0f} | {ratio:.3f} |")
e2e = f'{work}/results/e2e_resnet20.json'
if os.path.exists(e2e):
    r = json.load(open(e2e))
    wall = json.load(open(f'{work}/results/e2e_resnet20_wall.json'))['wall_seconds']
    print(f'\n## ResNet20 recipe end to end: {wall} s wall (incl. start-up and compilation)\n')
    print('| phase | CLI steps/s | bare steps/s | ratio | host ms/step |')
    print('| --- | --- | --- | --- | --- |')
    for kind in ('reconstruct', 'distill'):
        k = r.get(kind) or {}
        if k:
            print(f"| {kind} | {k['cli_steps_per_s']:.1f} | {k.get('bare_steps_per_s', 0):.1f} | "
                  f"{k.get('ratio', 0):.2f} | {k['host_ms_per_step']:.3f} |")
print('\n## Fidelity (same test images; delta = rebuilt - original)\n')
print('| run | ratio | artifact bytes | artifact ratio | original | rebuilt, before BN '
      're-estimation | rebuilt | delta | wall s |')
print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
for path in sorted(glob.glob(f'{work}/runs/*/report.json')):
    r = json.load(open(path))
    name = os.path.basename(os.path.dirname(path))
    d = r['top1_reconstructed'] - r['top1_original']
    recal = [p for p in r['phases'] if p['kind'] == 'recalibrate']
    before = f"{recal[-1]['top1_before']:.2f}" if recal else '-'
    print(f"| {name} | {r['ratio']:.3f} | {r.get('artifact_bytes', 0):,} | "
          f"{r.get('artifact_ratio', float('nan')):.3f} | "
          f"{r['top1_original']:.2f} | {before} | {r['top1_reconstructed']:.2f} | {d:+.2f} | "
          f"{r['wall_seconds']:.0f} |")
EOF
cat "$results/summary.md"
tar -czf "$out" -C "$work" results $(cd "$work" && ls runs/*/report.json runs/*/report.md runs/*.log 2>/dev/null)
stage "wrote $out"
