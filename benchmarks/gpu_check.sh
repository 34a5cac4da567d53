#!/usr/bin/env bash
# The GPU path in one run (< 8 minutes on one lent GPU): prints one table.
#   1. the tests marked `cuda`;
#   2. 480p FPS at 60 frames for dense, exact, fp16 and compile (paper-sized network) + peak GPU memory;
#   3. 50 training iterations with AMP + GradScaler at batch 4 (iterations/s);
#   4. a one-GPU torchrun DDP smoke run.
# Usage: benchmarks/gpu_check.sh [python]   (default: python; run from the repository root)
# Fails at once, with a message, when no CUDA device is visible.
set -uo pipefail
PY=${1:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || exit 2
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)); nothing run" >&2
    exit 2
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
GPU=$("$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB")')
row() { printf '| %s | %s | %s |\n' "$1" "$2" "$3" >> "$OUT/table"; }
: > "$OUT/table"

# 1. tests marked cuda (about 1 minute)
start=$SECONDS
if timeout 150 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests > "$OUT/tests.log" 2>&1; then ok=pass; else ok=FAIL; fi
row "tests -m cuda" "$ok: $(tail -1 "$OUT/tests.log")" "$((SECONDS - start)) s"

# 2. inference FPS at 480p, 60 frames, each mode in its own process (about 4 minutes in all)
start=$SECONDS
if timeout 300 "$PY" benchmarks/bench_inference.py modes --device cuda --frames 60 \
        --modes dense exact fp16 compile --json "$OUT/fps.json" > "$OUT/fps.log" 2>&1; then
    "$PY" - "$OUT/fps.json" >> "$OUT/table" <<'PYEOF'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
for r in rows:
    vs = f", {r['vs_dense']:.2f}x dense" if r.get("vs_dense") else ""
    print(f"| 480p {r['mode']}, 60 frames | {r['fps_median']:.2f} FPS{vs}, labels = exact {100 * r['agreement']:.2f} % "
          f"| peak GPU {r.get('peak_cuda_mb', float('nan')):.0f} MB |")
PYEOF
else
    row "480p FPS (dense, exact, fp16, compile)" "FAIL (see below)" "$((SECONDS - start)) s"
fi

# 3. training: 50 iterations, AMP + GradScaler (the trainer's default on CUDA), batch 4, paper-sized network
start=$SECONDS
if timeout 150 "$PY" -m stcn.cli train --stage synthetic --model stcn --no-pretrained --device cuda \
        --iterations 50 --batch-size 4 --log-every 10 --save-every 1000 --run-dir "$OUT/train" \
        > "$OUT/train.log" 2>&1; then
    "$PY" - "$OUT/train/log.jsonl" $((SECONDS - start)) >> "$OUT/table" <<'PYEOF'
import json, sys
lines = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
wall = float(sys.argv[2])
print(f"| train 50 it, AMP + GradScaler, batch 4 | {50 / wall:.2f} it/s (start-up included), "
      f"last loss {lines[-1].get('loss/total_loss', float('nan')):.3f} | {wall:.0f} s |")
PYEOF
else
    row "train 50 it, AMP, batch 4" "FAIL (see below)" "$((SECONDS - start)) s"
fi

# 4. DDP smoke: one process per GPU through torchrun, 5 iterations
start=$SECONDS
if timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 1 -m stcn.cli train --stage synthetic \
        --model small --no-pretrained --device cuda --iterations 5 --batch-size 2 --crop 128 --save-every 1000 \
        --run-dir "$OUT/ddp" > "$OUT/ddp.log" 2>&1; then ok=pass; else ok=FAIL; fi
row "torchrun DDP smoke (1 GPU, 5 it)" "$ok" "$((SECONDS - start)) s"

echo "# gpu_check on $GPU; $("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')"
echo "| check | result | time / memory |"
echo "| --- | --- | --- |"
cat "$OUT/table"
if grep -q FAIL "$OUT/table"; then
    for log in "$OUT"/*.log; do echo "--- $(basename "$log") (last lines)"; tail -15 "$log"; done
    exit 1
fi
