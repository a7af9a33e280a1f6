#!/bin/bash
# The measurements of docs/performance.md, on a host with two H200s: ViT-B/16 on GPU 0 and
# T5-Base on GPU 1 at once, each stream one process per measurement (a failing one does not stop
# the rest), every variant against the baseline of its own stream and GPU.
#   OUT=/tmp/out STEPS=10 bash benchmarks/h200_candidates.sh
#   ONLY='peers|cudnn|logits|nostats|t5_topk|radix2|triton' bash benchmarks/h200_candidates.sh  # a subset
# Logs: $OUT/vit.log, $OUT/t5.log; one JSON line per measurement in $OUT/vit.jsonl, $OUT/t5.jsonl.
set -u
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-10}
LIMIT=${LIMIT:-400}  # seconds for each stream
VC=${VIT_CONFIG:-configs/vit.py}  # smaller configs and batches to try the script on a CPU
TC=${T5_CONFIG:-configs/t5.py}
VB=${VIT_BATCH:-256}
TB=${T5_BATCH:-128}
K=${TOPK:-128}
topk() { case $1 in *:*) echo "$1,topk=$K" ;; *) echo "$1:topk=$K" ;; esac; }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2

run() {  # run STREAM NAME CMD...: one measurement (only names matching the regex $ONLY, if set)
  local stream=$1 name=$2
  shift 2
  if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then return; fi
  local left=$((END - SECONDS))
  if [ $left -lt 30 ]; then echo "=== $name skipped: out of time" >>"$OUT/$stream.log"; return; fi
  echo "=== $name: $*" >>"$OUT/$stream.log"
  local t0=$SECONDS
  timeout $left "$@" --steps="$STEPS" --json="/tmp/$name.json" >>"$OUT/$stream.log" 2>&1
  echo "=== $name rc=$? $((SECONDS - t0))s" >>"$OUT/$stream.log"
  [ -f "/tmp/$name.json" ] && python3 -c "import json; d = json.load(open('/tmp/$name.json')); d['name'] = '$name'; print(json.dumps(d))" >>"$OUT/$stream.jsonl"
}

# Ours at the peers' settings (what --peers sets): AdamW, no clipping, weight decay 0.01, dropout 0.
EQ="--config.optimizer.name=adamw --config.optimizer.grad_clip_norm=0 --config.optimizer.weight_decay=0.01 --config.model.dropout_rate=0"

vit_stream() {
  export CUDA_VISIBLE_DEVICES=$1
  local V="--per_device_batch=$VB $EQ ${VIT_EXTRA:-}"
  run vit vit_peers python3 -m lazy_jax.bench --config=$VC $V --peers
  run vit vit_topk_bisect python3 -m lazy_jax.bench --config=$(topk $VC) $V --config.model.topk_impl=bisect
  run vit vit_topk_radix python3 -m lazy_jax.bench --config=$(topk $VC) $V --config.model.topk_impl=radix
  run vit vit_cudnn python3 -m lazy_jax.bench --config=$VC $V --attention=cudnn
  run vit vit_nostats python3 -m lazy_jax.bench --config=$VC $V --nostats
  RADIX_STACKED=1 run vit vit_topk_radix_stacked python3 benchmarks/bench_variant.py --config=$(topk $VC) $V --config.model.topk_impl=radix
  run vit vit_dense_again python3 -m lazy_jax.bench --config=$VC $V
  RADIX_DIGIT_BITS=2 run vit vit_topk_radix2 python3 benchmarks/bench_variant.py --config=$(topk $VC) $V --config.model.topk_impl=radix
  XLA_FLAGS=--xla_gpu_enable_triton_gemm=false run vit vit_no_triton_gemm python3 -m lazy_jax.bench --config=$VC $V
}

t5_stream() {
  export CUDA_VISIBLE_DEVICES=$1
  local T="--per_device_batch=$TB $EQ ${T5_EXTRA:-}"
  run t5 t5_peers python3 -m lazy_jax.bench --config=$TC $T --peers
  run t5 t5_onehot python3 -m lazy_jax.bench --config=$TC $T --relpos=onehot
  run t5 t5_logits_bf16 python3 -m lazy_jax.bench --config=$TC $T --attention_logits=activation
  run t5 t5_nostats python3 -m lazy_jax.bench --config=$TC $T --nostats
  run t5 t5_topk_radix python3 -m lazy_jax.bench --config=$(topk $TC) $T --config.model.topk_impl=radix
  run t5 t5_onehot_logits_bf16 python3 -m lazy_jax.bench --config=$TC $T --relpos=onehot --attention_logits=activation
}

END=$((SECONDS + LIMIT))
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv >"$OUT/gpu.txt" 2>&1
vit_stream 0 &
t5_stream "${T5_GPU:-1}" &
wait
python3 - "$OUT" <<'PY'
import json, sys, pathlib
for stream in ("vit", "t5"):
    path = pathlib.Path(sys.argv[1]) / f"{stream}.jsonl"
    if not path.exists():
        continue
    for line in path.read_text().splitlines():
        d = json.loads(line)
        r = d["results"][0]
        print(f"{d['name']:<26} step {r['step_ms']:8.2f} ms  ex/s {r['examples_per_s']:8.1f}  tok/s {r['tokens_per_s']:>8}  compile {r['compile_s']}s  nz {r['nonzero_frac_mean']:.4f}")
        for row in d.get("table", []):
            print("    ", {k: row.get(k) for k in ("implementation", "step_ms", "examples_per_s", "tokens_per_s", "tflops", "mfu", "ours_over_this", "error")})
PY
