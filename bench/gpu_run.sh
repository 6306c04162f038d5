#!/usr/bin/env bash
# The GPU training benchmark (bench/bench_gpu.py, every arm) as one call of the device tool.
#
# Once, here, on a machine that reaches PyPI (writes the wheels to .whl/, which .git/info/exclude keeps out of
# git and out of the working tree that travels unless a call carries it):
#
#     bash bench/gpu_run.sh download
#
# Then one device call: run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=600). It installs the
# wheels into /tmp/site (the device image has torch, Triton, accelerate, pandas and pyarrow, but not these
# versions of transformers and peft, nor trl, datasets, gguf, Liger or bitsandbytes), runs every arm within
# BENCH_DEADLINE seconds (default 420: arms that would start later are reported as not run) and leaves
# train_gpu.md, train_gpu.json, log.txt and the arms' own logs (arm-logs.tgz) in $OUT. Copy train_gpu.md over
# bench/results/train_gpu.md afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."

# Pinned as in requirements.lock (liger-kernel and bitsandbytes are GPU-only and not in the lock).
WHEELS=(
  transformers==5.23.0 peft==0.21.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
  gguf==0.19.0 liger-kernel==0.8.5 bitsandbytes==0.50.2
)

if [[ "${1:-}" == download ]]; then
  mkdir -p .git/info
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}" || exit 1
  du -ch .whl/*.whl | tail -1
  echo "the working tree that travels besides .whl: $(git ls-files -co --exclude-standard -z | du -cb --files0-from=- | tail -1 | cut -f1) bytes (64 MiB in all)"
  exit 0
fi

run() {
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

  if ! ls .whl/*.whl > /dev/null 2>&1; then
    echo "no wheels in .whl/: run 'bash bench/gpu_run.sh download' here first and carry .whl" >&2
    return 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || return 2
  export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

  # What imports (an arm whose packages do not import fails on its own and the others still run).
  python3 - <<'EOF'
import importlib
import importlib.metadata

for name in ("torch", "triton", "transformers", "peft", "accelerate", "trl", "datasets", "pyarrow", "gguf",
             "liger_kernel", "bitsandbytes", "flash_attn"):
    try:
        importlib.import_module(name)
        dist = {"liger_kernel": "liger-kernel", "flash_attn": "flash-attn"}.get(name, name)
        print(f"{name} {importlib.metadata.version(dist)}")
    except Exception as exc:  # report and go on: the benchmark skips or fails only the arms that need it
        print(f"{name}: does not import: {type(exc).__name__}: {exc}")
EOF

  # The random 16 GB model folder is written once and read by every homegrown arm: in memory when /dev/shm
  # has room for it, else on disk.
  if [[ $(df --output=avail -BG /dev/shm 2>/dev/null | tail -1 | tr -dc 0-9) -ge 24 ]]; then
    WORK=/dev/shm/homegrown-bench-gpu
  else
    WORK=/tmp/homegrown-bench-gpu
  fi
  echo "work dir $WORK"

  python3 bench/bench_gpu.py --deadline "${BENCH_DEADLINE:-420}" --work-dir "$WORK" \
    --out "$OUT/train_gpu.md" --json-out "$OUT/train_gpu.json"
  rc=$?
  if [[ -d $WORK ]]; then
    (cd "$WORK" && tar czf "$OUT/arm-logs.tgz" log-*.txt 2>/dev/null)
  fi
  rm -rf "$WORK"
  return $rc
}

OUT=${OUT:-/tmp/homegrown-gpu-out}
mkdir -p "$OUT"
run 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
