#!/usr/bin/env bash
# Run the GPU benchmark on a CUDA machine with torch + timm installed (no network, no install needed):
#   bash MMXAICore/benchmarks/gpu_bench.sh [--json "$OUT/gpu.json"] [other gpu_bench.py options]
# Research use only - not for diagnosis.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT/MMXAICore/src${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch, timm, numpy; print('torch', torch.__version__, 'timm', timm.__version__, 'cuda', torch.cuda.is_available())"
exec timeout 290 "$PY" "$ROOT/MMXAICore/benchmarks/gpu_bench.py" "$@"
