#!/usr/bin/env bash
# Runs the sweeps behind docs/results.md side by side on one machine (one GPU holds them all),
# then keeps a reduced copy of every run (metrics.jsonl, config.json, parameters.txt, the sweep's
# sweep.json; no checkpoints) under docs/results/<sweep>/ for the figures to be redrawn anywhere:
#   launch/results.sh [SWEEP[:ARG] ...]        default: the local-size sweeps listed below
#   python -m lazy_jax.report --compare docs/results/vit_size    # redraw one sweep's figures
# Runs go to ${RESULTS_WORKDIR:-runs/results}/<sweep>/ and resume where they stopped (rerun the
# command after a preemption or a timeout). ${RESULTS_PARALLEL:-8} sweeps run at once; on a GPU
# each process allocates memory as it needs it, so they share the device.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export TFDS_DATA_DIR=${TFDS_DATA_DIR:-$(pwd)/data/tfds}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
workroot=${RESULTS_WORKDIR:-runs/results}
parallel=${RESULTS_PARALLEL:-8}
sweeps=("$@")
if [ ${#sweeps[@]} -eq 0 ]; then
  sweeps=(vit_size vit_depth vit_width vit_data vit_topk_robust vit_topk t5_depth t5_width)
fi
mkdir -p "$workroot"
"$python" -m lazy_jax.data.prepare --dataset=mnist5k --data_dir="$TFDS_DATA_DIR" >/dev/null
"$python" -m lazy_jax.data.prepare --dataset=pydocs --data_dir="$TFDS_DATA_DIR" >/dev/null
for spec in "${sweeps[@]}"; do
  name=${spec%%:*}
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do sleep 2; done
  echo "== $spec -> $workroot/$name (log $workroot/$name.log)"
  ( start=$(date +%s)
    "$python" -m lazy_jax.sweep --sweep="configs/sweeps/${name}.py${spec#"$name"}" --workdir="$workroot/$name" >"$workroot/$name.log" 2>&1 \
      && echo "== $spec done in $(( $(date +%s) - start )) s" || echo "== $spec FAILED or stopped after $(( $(date +%s) - start )) s (see $workroot/$name.log)" ) &
done
wait
for spec in "${sweeps[@]}"; do
  name=${spec%%:*}
  for run in "$workroot/$name"/*/; do
    [ -f "$run/metrics.jsonl" ] || continue
    keep="docs/results/$name/$(basename "$run")"
    mkdir -p "$keep"
    for f in metrics.jsonl config.json parameters.txt; do [ -f "$run/$f" ] && cp "$run/$f" "$keep/"; done
  done
  [ -f "$workroot/$name/sweep.json" ] && cp "$workroot/$name/sweep.json" "docs/results/$name/"
done
echo "== kept under docs/results/"
