#!/usr/bin/env bash
# The GPU check (docs/gpu-validation.md): the gpu-marked tests, three short sweeps (the
# first with device ceilings), a per-layer profile and the checks of scripts/gpu_check.py,
# printed as a markdown table. At most 9.5 minutes on one GPU (about 7.3 measured); needs torch, torchvision, pandas, pyarrow, seaborn, pytest and
# nvidia-ml-py, and no network.
#
#   bash scripts/gpu_check.sh             on a machine with a CUDA GPU (uses cuda:0)
#   bash scripts/gpu_check.sh --dry-run   the same steps on the CPU with tiny models
#
# Everything goes under $OUT (else a new temporary folder): gpu_check.log (this output),
# gpu_check.md (machine record and table), rows.parquet (every row of the sweeps) and
# runs.tar.gz (run folders, step logs); the last line says where. Exit status: 0 when no
# check failed, 1 when one did, 2 on bad usage or when a GPU run finds no GPU.
# The sweeps can be narrowed for a rerun, e.g. DTYPES_MODELS=resnet50 CONFIGS_REPEATS=1.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DRY=0
case "${1:-}" in
  "") ;;
  --dry-run) DRY=1 ;;
  -h | --help) sed -n '2,14p' "${BASH_SOURCE[0]}" | cut -c3-; exit 0 ;;
  *) echo "gpu_check.sh: unknown argument '$1'; give --dry-run or nothing" >&2; exit 2 ;;
esac
[[ $# -le 1 ]] || { echo "gpu_check.sh: one argument at most (--dry-run)" >&2; exit 2; }

PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/effbench-gpu-check.XXXXXX")}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=$OUT/work  # packed into runs.tar.gz at the end (the device tool returns 8 files)
rm -rf "$WORK" "$OUT/gpu_check.md" "$OUT/rows.parquet" "$OUT/runs.tar.gz"
mkdir -p "$WORK" || exit 2
exec > >(tee "$OUT/gpu_check.log") 2>&1

export PYTHONPATH="$ROOT:$ROOT/tests/plugins${PYTHONPATH:+:$PYTHONPATH}"
case ",${EFFBENCH_PLUGINS:-}," in
  *,effbench_test_models,*) ;;
  *) export EFFBENCH_PLUGINS="${EFFBENCH_PLUGINS:+$EFFBENCH_PLUGINS,}effbench_test_models" ;;
esac
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# Time limits of the steps (s): 535, and 5 s of grace each after a step's SIGTERM, make
# 9.5 minutes at most. Measured on an H200 (2026-12-04, docs/gpu-validation.md): header 4,
# gpu tests 47, sweep-dtypes ~4.5 s a cell after 17 s of start and ceilings (31 cells in
# 152 s), sweep-configs 109 (12 cells, 4 cold inductor compiles), sweep-parallel 22,
# profile 20, checks 52: ~7.3 min.
T_HEADER=10 T_TESTS=60 T_DTYPES=200 T_CONFIGS=135 T_PARALLEL=35 T_PROFILE=30 T_CHECK=65

if ((DRY)); then
  DEVICE=cpu
  T_HEADER=60  # importing torch on a busy 2-core machine can take 10 s and more
  # Tiny models on one thread; alloc64 touches a known 64 MiB per image, which the CPU's
  # resident-set probe resolves (a tiny model's kilobytes it does not).
  : "${DTYPES_MODELS:=alloc64}" "${DTYPES_BATCHES:=1,2}" "${DTYPES_DTYPES:=float32,bfloat16}"
  : "${DTYPES_CONFIGS:=eager,channels_last}" "${DTYPES_REPEATS:=1}"
  : "${CONFIGS_MODELS:=tiny_mlp}" "${CONFIGS_BATCHES:=1}" "${CONFIGS_DTYPES:=float32}"
  : "${CONFIGS_CONFIGS:=compile}" "${CONFIGS_REPEATS:=1}"
  : "${PARALLEL_MODELS:=alloc64}" "${PARALLEL_BATCHES:=1,2}" "${PARALLEL_DTYPES:=float32}"
  : "${PARALLEL_CONFIGS:=eager}" "${PARALLEL_REPEATS:=1}"
  : "${TIMER_CELLS:=alloc64:1:float32:eager}"
  : "${PROFILE_MODEL:=lenet5}" "${PROFILE_BATCH:=4}" "${PROFILE_DTYPE:=float32}"
  CEILINGS=(--no-ceilings)  # seconds per dtype on this CPU; the GPU run measures them
  PROFILE_ARGS=(--threads 1)
  TIMING=(--threads 1 --warmup-iters 1 --warmup-time 0 --min-time 0.05 --max-time 0.3)
  # This CPU is shared: other processes take it for tens of ms at a time, so the dry run
  # checks that the Timer comparison runs and roughly agrees (25%), not the 3% of a GPU.
  CHECK_ARGS=(--dry-run --threads 1 --timer-seconds 0.2 --pairs 9 --timer-tolerance 0.25
    --profile-tolerance 0.5)
  CELL_TIMEOUT=60
else
  DEVICE=cuda:0
  # 36 cells: every dtype on four networks of different shapes, eager.
  : "${DTYPES_MODELS:=resnet50,vgg16,googlenet,mobilenet_v3_large}"
  : "${DTYPES_BATCHES:=1,8,64}" "${DTYPES_DTYPES:=float32,float16,bfloat16}"
  : "${DTYPES_CONFIGS:=eager}" "${DTYPES_REPEATS:=1}"
  # 12 cells: the configurations on one network small enough to compile in ~20 s; the
  # second repeat compiles from inductor's cache.
  : "${CONFIGS_MODELS:=resnet18}" "${CONFIGS_BATCHES:=1,8}" "${CONFIGS_DTYPES:=float16}"
  : "${CONFIGS_CONFIGS:=channels_last,compile,cudagraphs}" "${CONFIGS_REPEATS:=2}"
  # --parallel (issue 14): one lane per visible GPU, pinned to its own share of the cores.
  : "${PARALLEL_MODELS:=resnet18}" "${PARALLEL_BATCHES:=1,8}" "${PARALLEL_DTYPES:=float32}"
  : "${PARALLEL_CONFIGS:=eager}" "${PARALLEL_REPEATS:=1}"
  : "${TIMER_CELLS:=resnet50:1:float32:eager,resnet50:64:float16:eager,mobilenet_v3_large:8:bfloat16:eager}"
  : "${PROFILE_MODEL:=resnet50}" "${PROFILE_BATCH:=8}" "${PROFILE_DTYPE:=float16}"
  CEILINGS=(--ceilings)
  PROFILE_ARGS=()
  # The NVML energy counter needs a 1 s window: the worker raises --min-time to it.
  TIMING=(--warmup-iters 2 --warmup-time 0.1 --min-time 0.5 --max-time 1.5)
  CHECK_ARGS=()
  CELL_TIMEOUT=100
fi

STEPS=$WORK/steps.tsv
: >"$STEPS"
# step NAME LIMIT_S COMMAND...: run COMMAND under a time limit and record its exit status
# (124/137: stopped at the limit) and duration for the checker.
step() {
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  printf '\n## %s (limit %s s)\n$ %s\n' "$name" "$limit" "$*"
  timeout --kill-after=5 "$limit" "$@"
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$STEPS"
  if ((rc == 124 || rc == 137)); then
    echo "gpu_check: $name ran past its $limit s and was stopped"
  fi
  return "$rc"
}

sweep() {  # sweep NAME LIMIT_S [FLAG...]: one `effbench run` from the NAME's variables above
  local name=$1 limit=$2 v=${1#sweep-}
  v=${v^^}
  local models=${v}_MODELS batches=${v}_BATCHES dtypes=${v}_DTYPES configs=${v}_CONFIGS
  local repeats=${v}_REPEATS
  step "$name" "$limit" "$PY" -m bench run --models "${!models}" --batch-sizes "${!batches}" \
    --dtypes "${!dtypes}" --configs "${!configs}" --repeats "${!repeats}" \
    --devices "$DEVICE" --cell-timeout "$CELL_TIMEOUT" "${TIMING[@]}" \
    --out "$WORK/results" --run-id "$name" "${@:3}"
}

echo "gpu_check: $( ((DRY)) && echo 'dry run on the CPU' || echo "GPU run on $DEVICE"); writing to $OUT"
echo "gpu_check: limits (s): header $T_HEADER, gpu tests $T_TESTS, sweep-dtypes $T_DTYPES," \
  "sweep-configs $T_CONFIGS, sweep-parallel $T_PARALLEL, profile $T_PROFILE, checks $T_CHECK"
HEADER_ARGS=(--work "$WORK")
((DRY)) && HEADER_ARGS+=(--dry-run)
step header "$T_HEADER" "$PY" scripts/gpu_check.py header "${HEADER_ARGS[@]}"
rc=$?
if ((rc == 3)); then
  exit 2
fi

mapfile -t GPU_TESTS < <(grep -lE '^[[:space:]]*(@pytest\.mark\.gpu|pytestmark = .*mark\.gpu)' tests/test_*.py)
if ((${#GPU_TESTS[@]})); then
  step gpu-tests "$T_TESTS" "$PY" -m pytest -p no:cacheprovider -m gpu -q -rs \
    --junitxml "$WORK/gpu-tests.xml" "${GPU_TESTS[@]}"
else
  echo "gpu_check: no test file has a gpu mark"
  printf 'gpu-tests\t5\t0\t%s\n' "$T_TESTS" >>"$STEPS"
fi

sweep sweep-dtypes "$T_DTYPES" "${CEILINGS[@]}"
sweep sweep-configs "$T_CONFIGS" --no-ceilings
PAR_DEVICE=$DEVICE
((DRY)) || PAR_DEVICE=cuda  # every visible GPU, one lane each
DEVICE=$PAR_DEVICE sweep sweep-parallel "$T_PARALLEL" --parallel --no-ceilings
step profile "$T_PROFILE" "$PY" -m bench profile "$PROFILE_MODEL" --device "$DEVICE" \
  --batch-size "$PROFILE_BATCH" --dtype "$PROFILE_DTYPE" --no-ceilings "${PROFILE_ARGS[@]}" \
  --out "$WORK/profiles"

step check "$T_CHECK" "$PY" scripts/gpu_check.py check --work "$WORK" --out "$OUT" \
  --device "$DEVICE" --timer-cells "$TIMER_CELLS" "${CHECK_ARGS[@]}"
status=$?
if [[ ! -f $OUT/gpu_check.md ]] || ((status != 0 && status != 1)); then
  echo "gpu_check: the checks did not finish (exit $status); see the log above"
  status=1
fi

tar -czf "$OUT/runs.tar.gz" -C "$WORK" . && rm -rf "$WORK"
echo
echo "gpu_check: $( ((status)) && echo 'FAILED' || echo 'passed'); everything is under $OUT"
exit "$status"
