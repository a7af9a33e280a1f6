#!/bin/bash
# The second and third rounds of docs/performance.md and docs/inference.md, on a host with two
# H200s. ROUND=2 (the default):
#   GPU 0: ViT-B/16 (profiles, cuDNN attention, no Triton GEMMs, the real input loop), then the
#          decoding measurements (kernel check, profiles, Top-k selection, command buffers, a
#          trained T5 decoded both ways);
#   GPU 1: T5-Base (profile, bf16 logits, statistics, Top-k, the real input loop, the peers).
# ROUND=3, after the defaults changed by round 2 (cuDNN attention, bf16 T5 logits, cuBLAS GEMMs):
#   GPU 0: ViT-B/16 against the peers, Top-k, profiles, the real loop, Triton GEMMs back on, a
#          T5-Base-shape decode; GPU 1: T5-Base against the peers, the real loop, Top-k, profile;
#   then both GPUs: ViT-B/16 and T5-Base data-parallel on 1 and 2 GPUs (the scaling).
# ROUND=4: the one-read Top-k kernel against dense and the bisection, both models (and alone,
#   benchmarks/topk_kernel.py); ViT's token stream padded once vs per layer; T5-11B-shape decoding
#   under XLA's GEMM choices (Triton GEMMs, dot strength reduction).
# ROUND=5: ViT against the peers with q/k/v split and the stream padded once (and fused q/k/v),
#   the register-held Top-k kernel (alone and in both models), decoding with Triton GEMMs.
# ROUND=6: Top-k with its threshold on the pre-activation against dense (both models), ViT's
#   statistics and real loop with the round-5 defaults, the T5-3B decode batch sweep.
# ROUND=7: the Top-k kernel with two bf16 values a lane (8 rows) against dense, ViT's peers.
# ROUND=8 (one GPU): that kernel counting with a logical shift, against dense (ViT).
# ROUND=9 (LIMIT=520): every bar of docs/performance.md with the committed code in one call
#   (peers, Top-k with topk_impl='auto' and 'pallas_fused', statistics, ViT's real loop; T5's
#   --nostats on GPU 0).
# ROUND=10 (LIMIT=310 LIMIT_BOTH=200): T5's real loop; the kernel on an f32 map; a T5-Base shape
#   trained for ~170 s and decoded both ways (its logit check); then ViT dense and Top-k on one
#   and two GPUs (the kernel per device under the mesh).
# ROUND=11 (one GPU, LIMIT=330): decoding at full depth (T5-3B and T5-11B shape, 24 layers) beside
#   T5-Base, then the T5-3B (8 layers) batch sweep 1, 4, 16, 64.
# ROUND=12 (one GPU, LIMIT=300): decoding's Top-k selection by the one-read kernel (one row a
#   program, up to 64 loads) against the bisection, three shapes, then T5-11B at full depth.
# ROUND=13 (one GPU, LIMIT=170): decoding with the defaults after round 12 ('auto' = the kernel's
#   selection at batch 1 too), T5-Base and full-depth T5-3B and T5-11B shapes.
# ROUND=14 (one GPU, LIMIT=300): the approximate 'predicted' path (lazy_jax.predictor: W_in rows
#   too) beside dense and the exact kernel: the trained local T5, then the three shapes, profiled.
# ROUND=15 (one GPU, LIMIT=240): the decoding kernels alone at batch 1 over a grid of their tile
#   settings (benchmarks/sparse_kernels.py), T5-11B and T5-3B shapes. (Its first call timed
#   dispatch, not the kernels: the script now times 32 calls in one jit.)
# ROUND=16 (one GPU, LIMIT=150): the compacted forms (nonzero, take, dot; lax.top_k's indices)
#   at the same shapes, beside the one-read selection (benchmarks/sparse_kernels.py --compacted).
#   Rerun (round 16b) after the compacted Pallas kernels were added to the script.
# ROUND=17 (one GPU, LIMIT=420): decoding with the compacted batch-1 kernels (the sparse W_out and
#   the predicted rows by index), exact and predicted (2k and k rows of W_in), profiled.
# ROUND=18 (one GPU, LIMIT=330): the thresholded predictor (no selection, k rows on average) beside
#   the top-k one, T5-3B and T5-11B shapes at full depth, profiled.
# Every measurement is its own process (a failing one does not stop the rest).
#   OUT=/tmp/out bash benchmarks/h200_round2.sh
#   ONLY='vit_dense|t5_dense' bash benchmarks/h200_round2.sh     # a subset (regex on the names)
# Needs: data/tfds with mnist5k and pydocs prepared (python -m lazy_jax.data.prepare), and for
# the trained decode a T5 run in $TRAINED (its config.json, metrics.jsonl and a checkpoint) with
# prompts in $PROMPTS (JSONL, as lazy_jax.generate reads).
# Output: $OUT/<stream>.log, $OUT/<stream>.jsonl (one JSON line per bench), $OUT/prof/<name>.md
# (lazy_jax.profiling tables), $OUT/realloop.jsonl, $OUT/decode/<name>/bench_decode.json.
set -u
OUT=${OUT:-/tmp/out}
STEPS=${STEPS:-10}
LIMIT=${LIMIT:-520}  # seconds for each GPU's streams
TRAINED=${TRAINED:-runs/carry/t5_pydocs}
PROMPTS=${PROMPTS:-runs/carry/prompts.jsonl}
mkdir -p "$OUT/prof" "$OUT/decode"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
EQ="--config.optimizer.name=adamw --config.optimizer.grad_clip_norm=0 --config.optimizer.weight_decay=0.01 --config.model.dropout_rate=0"
VB="--per_device_batch=256 $EQ"
TB="--per_device_batch=128 $EQ"
# The real loops: mnist5k resized to 224 (1 channel) and pydocs at 512 + 114 tokens, T5's vocabulary.
VIT_REAL="--config=configs/vit.py:dataset=mnist5k --config.data.image_size=224 $EQ"
T5_REAL="--config=configs/t5.py:local,size=base --config.data.inputs_length=512 --config.data.targets_length=114 --config.model.dtype=bfloat16 --config.model.vocab_size=32128 $EQ"

want() { [ -z "${ONLY:-}" ] || [[ $1 =~ $ONLY ]]; }
left() { echo $((END - SECONDS)); }

bench() {  # bench STREAM NAME ARGS...: one lazy_jax.bench process; PROFILE=1 also traces 3 steps
  local stream=$1 name=$2
  shift 2
  want "$name" || return
  if [ "$(left)" -lt 40 ]; then echo "=== $name skipped: out of time" >>"$OUT/$stream.log"; return; fi
  local prof=()
  [ -n "${PROFILE:-}" ] && prof=(--profile_dir="/tmp/prof/$name")
  echo "=== $name: $*" >>"$OUT/$stream.log"
  local t0=$SECONDS
  timeout "$(left)" python3 -m lazy_jax.bench "$@" --steps="$STEPS" --json="/tmp/$name.json" "${prof[@]}" >>"$OUT/$stream.log" 2>&1
  echo "=== $name rc=$? $((SECONDS - t0))s" >>"$OUT/$stream.log"
  [ -f "/tmp/$name.json" ] && python3 -c "import json; d = json.load(open('/tmp/$name.json')); d['name'] = '$name'; print(json.dumps(d))" >>"$OUT/$stream.jsonl"
  if [ -n "${PROFILE:-}" ] && [ -d "/tmp/prof/$name" ]; then
    python3 -m lazy_jax.profiling "/tmp/prof/$name" --steps=3 --top=40 >"$OUT/prof/$name.md" 2>&1
  fi
}

realloop() {  # realloop STREAM NAME ARGS...: lazy_jax.main for 80 steps; median steps/s after step 30
  local stream=$1 name=$2
  shift 2
  want "$name" || return
  if [ "$(left)" -lt 60 ]; then echo "=== $name skipped: out of time" >>"$OUT/$stream.log"; return; fi
  echo "=== $name: $*" >>"$OUT/$stream.log"
  local t0=$SECONDS wd=/tmp/realloop/$name
  rm -rf "$wd"
  timeout "$(left)" python3 -m lazy_jax.main "$@" --workdir="$wd" --config.batch_size="$BATCH" \
    --config.total_steps=80 --config.log_every_steps=10 --config.eval_every_steps=1000000 \
    --config.checkpoint_every_steps=1000000 --config.eval_batch_size="$BATCH" >>"$OUT/$stream.log" 2>&1
  echo "=== $name rc=$? $((SECONDS - t0))s" >>"$OUT/$stream.log"
  python3 - "$wd/metrics.jsonl" "$name" "$BATCH" >>"$OUT/realloop.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rates = [r["steps_per_sec"] for r in rows if r.get("split") == "train" and r["step"] > 30 and "steps_per_sec" in r]
print(json.dumps(dict(name=sys.argv[2], batch=int(sys.argv[3]), steps_per_s=statistics.median(rates), all=rates)))
PY
}

decode() {  # decode NAME ARGS...: one lazy_jax.bench_decode process into $OUT/decode/NAME
  local name=$1
  shift
  want "$name" || return
  if [ "$(left)" -lt 40 ]; then echo "=== $name skipped: out of time" >>"$OUT/decode.log"; return; fi
  mkdir -p "$OUT/decode/$name"
  echo "=== $name: $*" >>"$OUT/decode.log"
  local t0=$SECONDS
  timeout "$(left)" python3 -m lazy_jax.bench_decode --out "$OUT/decode/$name" "$@" >>"$OUT/decode.log" 2>&1
  echo "=== $name rc=$? $((SECONDS - t0))s" >>"$OUT/decode.log"
  for p in /tmp/dprof/$name/*/; do
    [ -d "$p" ] && python3 -m lazy_jax.profiling "$p" --top=40 >"$OUT/prof/${name}_$(basename "$p").md" 2>&1
  done
}

vit_then_decode() {
  export CUDA_VISIBLE_DEVICES=0
  PROFILE=1 bench vit vit_dense --config=configs/vit.py $VB
  bench vit vit_cudnn --config=configs/vit.py $VB --attention=cudnn
  PROFILE=1 bench vit vit_topk --config=configs/vit.py:topk=128 $VB
  BATCH=256 realloop vit vit_realloop $VIT_REAL
  bench vit vit_realloop_bench $VIT_REAL --per_device_batch=256 --num_classes=10
  XLA_FLAGS=--xla_gpu_enable_triton_gemm=false bench vit vit_no_triton_gemm --config=configs/vit.py $VB
  local D="--plan T5-11B:1 --impls off,pallas --repeats 5"
  decode dec_bisect $D --check --profile_dir /tmp/dprof/dec_bisect
  decode dec_trained --workdir "$TRAINED" --input_file "$PROMPTS" --max_decode_len 64 --repeats 3
  decode dec_radix $D --topk_impl radix
  decode dec_lax $D --topk_impl lax
  XLA_FLAGS=--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL \
    decode dec_cmdbuf $D
  decode dec_base --plan T5-Base:1 --impls off,pallas --repeats 5 --topk_impl radix
}

t5_stream() {
  export CUDA_VISIBLE_DEVICES=1
  PROFILE=1 bench t5 t5_dense --config=configs/t5.py $TB
  bench t5 t5_logits_bf16 --config=configs/t5.py $TB --attention_logits=activation
  bench t5 t5_nostats --config=configs/t5.py $TB --nostats
  bench t5 t5_topk_bisect --config=configs/t5.py:topk=128 $TB
  BATCH=128 realloop t5 t5_realloop $T5_REAL
  bench t5 t5_realloop_bench $T5_REAL --per_device_batch=128
  bench t5 t5_topk_radix --config=configs/t5.py:topk=128 $TB --config.model.topk_impl=radix
  bench t5 t5_peers --config=configs/t5.py $TB --peers
}

round3_gpu0() {
  export CUDA_VISIBLE_DEVICES=0
  bench vit vit_peers --config=configs/vit.py $VB --peers
  PROFILE=1 bench vit vit_topk --config=configs/vit.py:topk=128 $VB
  PROFILE=1 bench vit vit_dense --config=configs/vit.py $VB
  BATCH=256 realloop vit vit_realloop $VIT_REAL
  bench vit vit_realloop_bench $VIT_REAL --per_device_batch=256 --num_classes=10
  XLA_FLAGS=--xla_gpu_enable_triton_gemm=true bench vit vit_triton_gemm --config=configs/vit.py $VB
  bench vit vit_topk_radix --config=configs/vit.py:topk=128 $VB --config.model.topk_impl=radix
  decode dec_base --plan T5-Base:1 --impls off,pallas --repeats 5 --profile_dir /tmp/dprof/dec_base
}

round3_gpu1() {
  export CUDA_VISIBLE_DEVICES=1
  bench t5 t5_peers --config=configs/t5.py $TB --peers
  BATCH=128 realloop t5 t5_realloop $T5_REAL
  bench t5 t5_topk_bisect --config=configs/t5.py:topk=128 $TB
  PROFILE=1 bench t5 t5_dense --config=configs/t5.py $TB
  XLA_FLAGS=--xla_gpu_enable_triton_gemm=true bench t5 t5_triton_gemm --config=configs/t5.py $TB
}

round4_gpu0() {  # ViT: the token stream padded once (the new default) vs per layer; the Top-k kernel
  export CUDA_VISIBLE_DEVICES=0
  want topk_kernel && timeout 120 python3 benchmarks/topk_kernel.py --block_rows=8,16,32 >"$OUT/topk_kernel.jsonl" 2>"$OUT/topk_kernel.log"
  PROFILE=1 bench vit vit_dense --config=configs/vit.py $VB
  bench vit vit_pad_layer --config=configs/vit.py $VB --attention_pad=layer
  PROFILE=1 bench vit vit_topk_pallas --config=configs/vit.py:topk=128 $VB --config.model.topk_impl=pallas
  bench vit vit_topk_bisect --config=configs/vit.py:topk=128 $VB
}

round4_gpu1() {  # T5: the Top-k kernel; then decoding under XLA's GEMM choices (batch-1 GEMVs)
  export CUDA_VISIBLE_DEVICES=1
  bench t5 t5_dense --config=configs/t5.py $TB
  bench t5 t5_topk_pallas --config=configs/t5.py:topk=128 $TB --config.model.topk_impl=pallas
  bench t5 t5_topk_bisect --config=configs/t5.py:topk=128 $TB
  local D="--plan T5-11B:1 --impls off,pallas --repeats 5"
  decode dec_default $D --profile_dir /tmp/dprof/dec_default
  XLA_FLAGS=--xla_gpu_enable_triton_gemm=true decode dec_triton $D
  XLA_FLAGS=--xla_gpu_enable_dot_strength_reduction=false decode dec_nosr $D --profile_dir /tmp/dprof/dec_nosr
  XLA_FLAGS="--xla_gpu_enable_triton_gemm=true --xla_gpu_enable_dot_strength_reduction=false" decode dec_triton_nosr $D
}

round5_gpu0() {  # ViT against the peers with q/k/v split and the stream padded once; Top-k kernel v2
  export CUDA_VISIBLE_DEVICES=0
  want topk_kernel && timeout 150 python3 benchmarks/topk_kernel.py --block_rows=4,8,16 --num_warps=4,8 >"$OUT/topk_kernel.jsonl" 2>"$OUT/topk_kernel.log"
  bench vit vit_peers --config=configs/vit.py $VB --peers
  PROFILE=1 bench vit vit_dense --config=configs/vit.py $VB
  bench vit vit_qkv_fused --config=configs/vit.py $VB --attention_qkv=fused
  PROFILE=1 bench vit vit_topk_pallas --config=configs/vit.py:topk=128 $VB --config.model.topk_impl=pallas
  bench vit vit_topk_bisect --config=configs/vit.py:topk=128 $VB
}

round5_gpu1() {  # decoding with Triton GEMMs (the decode default now); T5 Top-k kernel v2
  export CUDA_VISIBLE_DEVICES=1
  local D="--plan T5-11B:1 --impls off,pallas --repeats 5"
  decode dec_11b $D --profile_dir /tmp/dprof/dec_11b
  XLA_FLAGS=--xla_gpu_enable_dot_strength_reduction=false decode dec_11b_nosr $D
  decode dec_base --plan T5-Base:1 --impls off,pallas --repeats 5 --profile_dir /tmp/dprof/dec_base
  decode dec_trained --workdir "$TRAINED" --input_file "$PROMPTS" --max_decode_len 64 --repeats 3
  bench t5 t5_dense --config=configs/t5.py $TB
  bench t5 t5_topk_pallas --config=configs/t5.py:topk=128 $TB --config.model.topk_impl=pallas
}

round6_gpu0() {  # ViT: Top-k (threshold on the pre-activation, 16-row kernel) against dense; statistics; real loop
  export CUDA_VISIBLE_DEVICES=0
  want topk_kernel && timeout 150 python3 benchmarks/topk_kernel.py --block_rows=8,16,32 --num_warps=8,16 >"$OUT/topk_kernel.jsonl" 2>"$OUT/topk_kernel.log"
  bench vit vit_dense --config=configs/vit.py $VB
  PROFILE=1 bench vit vit_topk_pallas --config=configs/vit.py:topk=128 $VB --config.model.topk_impl=pallas
  bench vit vit_nostats --config=configs/vit.py $VB --nostats
  BATCH=256 realloop vit vit_realloop $VIT_REAL
  bench vit vit_realloop_bench $VIT_REAL --per_device_batch=256 --num_classes=10
}

round6_gpu1() {  # T5: Top-k against dense; the T5-3B batch sweep with Triton GEMMs
  export CUDA_VISIBLE_DEVICES=1
  bench t5 t5_dense --config=configs/t5.py $TB
  bench t5 t5_topk_pallas --config=configs/t5.py:topk=128 $TB --config.model.topk_impl=pallas
  decode dec_sweep --impls off,pallas --repeats 5 --plan T5-3B:1,T5-3B:4,T5-3B:16
}

round7_gpu0() {  # ViT: the packed Top-k kernel against dense, and against the peers
  export CUDA_VISIBLE_DEVICES=0
  want topk_kernel && timeout 150 python3 benchmarks/topk_kernel.py --impls=bisect,pallas --block_rows=8,16 --pack=0,1 >"$OUT/topk_kernel.jsonl" 2>"$OUT/topk_kernel.log"
  bench vit vit_dense --config=configs/vit.py $VB
  PROFILE=1 bench vit vit_topk_pallas --config=configs/vit.py:topk=128 $VB --config.model.topk_impl=pallas
  bench vit vit_peers --config=configs/vit.py $VB --peers
}

round7_gpu1() {  # T5: the packed Top-k kernel against dense
  export CUDA_VISIBLE_DEVICES=1
  bench t5 t5_dense --config=configs/t5.py $TB
  bench t5 t5_topk_pallas --config=configs/t5.py:topk=128 $TB --config.model.topk_impl=pallas
}

round8_gpu0() {  # ViT: the packed kernel counting with a logical shift, against dense
  export CUDA_VISIBLE_DEVICES=0
  want topk_kernel && timeout 100 python3 benchmarks/topk_kernel.py --impls=pallas --block_rows=8 --num_warps=4,8 >"$OUT/topk_kernel.jsonl" 2>"$OUT/topk_kernel.log"
  bench vit vit_dense --config=configs/vit.py $VB
  PROFILE=1 bench vit vit_topk_pallas --config=configs/vit.py:topk=128 $VB --config.model.topk_impl=pallas
}

round9_gpu0() {  # every bar with the committed code, ViT side (Top-k: the default 'auto' = the kernel)
  export CUDA_VISIBLE_DEVICES=0
  bench vit vit_peers --config=configs/vit.py $VB --peers
  bench vit vit_topk --config=configs/vit.py:topk=128 $VB
  # 'pallas_fused' was removed after this round (slower): rerun, this row and T5's fail alone
  PROFILE=1 bench vit vit_topk_fused --config=configs/vit.py:topk=128 $VB --config.model.topk_impl=pallas_fused
  bench vit vit_nostats --config=configs/vit.py $VB --nostats
  BATCH=256 realloop vit vit_realloop $VIT_REAL
  bench vit vit_realloop_bench $VIT_REAL --per_device_batch=256 --num_classes=10
  bench vit t5_nostats --config=configs/t5.py $TB --nostats
  # the kernel at other widths and in f32 (compiled on a GPU only at d_ff 3072, bf16, before)
  bench vit vit_ti_topk --config=configs/vit.py:variant=Ti/16,topk=32 $VB
  bench vit vit_ti_topk_f32 --config=configs/vit.py:variant=Ti/16,topk=32 $VB --config.model.dtype=float32
}

round9_gpu1() {  # every bar with the committed code, T5 side
  export CUDA_VISIBLE_DEVICES=1
  bench t5 t5_peers --config=configs/t5.py $TB --peers
  bench t5 t5_topk --config=configs/t5.py:topk=128 $TB
  bench t5 t5_topk_fused --config=configs/t5.py:topk=128 $TB --config.model.topk_impl=pallas_fused
  # T5's real loop (0.989x in round 3) does not fit this call; its dense code is unchanged since.
}

round10_gpu0() {  # T5's real loop against its bench, with the current code
  export CUDA_VISIBLE_DEVICES=0
  BATCH=128 realloop t5 t5_realloop $T5_REAL
  bench t5 t5_realloop_bench $T5_REAL --per_device_batch=128
}

round10_gpu1() {  # the kernel on an f32 map; a trained T5-Base shape decoded both ways
  export CUDA_VISIBLE_DEVICES=1
  bench vit vit_ti_topk_f32 --config=configs/vit.py:variant=Ti/16,topk=32 $VB --config.model.dtype=float32
  # configs/sweeps/t5_size.py's base member, stopped by SIGTERM after 170 s (it checkpoints)
  local wd=/tmp/t5_base
  echo "=== t5_base_train" >>"$OUT/decode.log"
  timeout -s TERM 170 python3 -m lazy_jax.main --config=configs/t5.py:local --workdir=$wd \
    --config.optimizer.name=adafactor --config.optimizer.schedule=t5_rsqrt --config.optimizer.learning_rate=0.01 \
    --config.optimizer.warmup_steps=10000 --config.optimizer.weight_decay=0.0 --config.model.dtype=bfloat16 \
    --config.batch_size=128 --config.total_steps=1000000 --config.log_every_steps=100 --config.eval_every_steps=500 \
    --config.checkpoint_every_steps=1000 --config.model.d_model=768 --config.model.num_encoder_layers=12 \
    --config.model.num_decoder_layers=12 --config.model.d_ff=3072 --config.model.num_heads=12 --config.model.d_kv=64 \
    >>"$OUT/decode.log" 2>&1
  echo "=== t5_base_train rc=$?" >>"$OUT/decode.log"
  tail -n 3 $wd/metrics.jsonl >>"$OUT/decode.log"
  decode dec_trained_base --workdir $wd --input_file "$PROMPTS" --max_decode_len 64 --repeats 2
}

round10_both() {  # ViT on one and two GPUs, dense and Top-k (the kernel on each GPU's rows)
  export CUDA_VISIBLE_DEVICES=0,1
  END=$((SECONDS + ${LIMIT_BOTH:-200}))
  bench both vit_2gpu --config=configs/vit.py $VB --meshes=1x1x1,2x1x1
  bench both vit_topk_2gpu --config=configs/vit.py:topk=128 $VB --meshes=1x1x1,2x1x1
}

round11() {  # decoding: full-depth T5-3B and T5-11B shapes, then the batch sweep
  export CUDA_VISIBLE_DEVICES=0
  decode dec_full --plan T5-Base:1,T5-3B-full:1,T5-11B-full:1 --impls off,pallas --repeats 5 --budget_s 400
  decode dec_sweep --plan T5-3B:1,T5-3B:4,T5-3B:16,T5-3B:64 --impls off,pallas --repeats 3 --budget_s 400
}

round12() {  # decoding: the Top-k threshold of a batch-1 step by the kernel, against the bisection
  export CUDA_VISIBLE_DEVICES=0
  decode dec_sel_bisect --plan T5-11B:1,T5-3B:1,T5-Base:1 --impls off,pallas --repeats 5
  decode dec_sel_kernel --plan T5-11B:1,T5-3B:1,T5-Base:1 --impls off,pallas --repeats 5 --topk_impl pallas
  decode dec_sel_kernel_full --plan T5-11B-full:1 --impls off,pallas --repeats 5 --topk_impl pallas
}

round13() {  # decoding with the current defaults, full depth
  export CUDA_VISIBLE_DEVICES=0
  decode dec_defaults --plan T5-Base:1,T5-3B-full:1,T5-11B-full:1 --impls off,pallas --repeats 5
}

round14() {  # the predicted path (approximate) beside dense and the exact sparse W_out
  export CUDA_VISIBLE_DEVICES=0
  decode dec_local_pred --workdir runs/carry/t5_pydocs --input_file runs/carry/prompts.jsonl \
    --predictor 32:192 --max_decode_len 64 --repeats 3
  decode dec_predicted --plan T5-Base:1,T5-3B-full:1,T5-11B-full:1 --impls off,pallas,predicted --repeats 5 \
    --profile_dir /tmp/dprof/dec_predicted
}

kernels() {  # kernels ARGS...: benchmarks/sparse_kernels.py at T5-11B's and T5-3B's shapes into $OUT/kernels.jsonl
  timeout "$(left)" python3 benchmarks/sparse_kernels.py --shapes=65536x1024,16384x1024 "$@" \
    >"$OUT/kernels.jsonl" 2>"$OUT/kernels.err"
  echo "=== kernels rc=$?" >>"$OUT/decode.log"
}

round15() {  # the sparse W_out and the predicted-rows kernels alone, over their tile settings
  export CUDA_VISIBLE_DEVICES=0
  kernels
}

round16() {  # the compacted (index-list) forms of the same products
  export CUDA_VISIBLE_DEVICES=0
  kernels --compacted
}

round17() {  # decoding with the compacted kernels: exact, predicted at 2k and at k rows
  export CUDA_VISIBLE_DEVICES=0
  decode dec_local_pred17 --workdir runs/carry/t5_pydocs --input_file runs/carry/prompts.jsonl \
    --predictor 32:192 --max_decode_len 64 --repeats 3
  decode dec_compact --plan T5-Base:1,T5-3B-full:1,T5-11B-full:1 --impls off,pallas,predicted,predicted@1 \
    --repeats 5 --profile_dir /tmp/dprof/dec_compact
}

round18() {  # the predictor's rows past a fitted threshold against its top rows
  export CUDA_VISIBLE_DEVICES=0
  decode dec_threshold --plan T5-11B-full:1,T5-3B-full:1 --impls off,pallas,predicted@1,predicted@1:threshold \
    --repeats 5 --profile_dir /tmp/dprof/dec_threshold
}

round19() {  # decode attention: the Pallas kernel (now 'auto' on a GPU) against XLA's, T5-11B shape
  export CUDA_VISIBLE_DEVICES=0
  decode dec_attn --check --plan T5-11B-full:1 --impls off,pallas,predicted@1:threshold \
    --repeats 5 --profile_dir /tmp/dprof/dec_attn
  decode dec_attn_xla --plan T5-11B-full:1 --impls off,pallas --decode_attention=xla --repeats 5
}

round20() {  # the attention kernel alone over its tiles; the trained local T5; the table of docs/inference.md
  export CUDA_VISIBLE_DEVICES=0
  kernels --attention
  decode dec_local20 --workdir runs/carry/t5_pydocs --input_file runs/carry/prompts.jsonl \
    --predictor 32:192 --max_decode_len 64 --repeats 3
  decode dec_now --plan T5-Base:1,T5-3B-full:1,T5-11B-full:1 --impls off,pallas,predicted@1,predicted@1:threshold \
    --repeats 5 --profile_dir /tmp/dprof/dec_now
}

round21() {  # the table of docs/inference.md with the attention kernel's tiles of round 20's sweep; XLA's attention beside
  export CUDA_VISIBLE_DEVICES=0
  decode dec_now21 --check --plan T5-Base:1,T5-3B-full:1,T5-11B-full:1 \
    --impls off,pallas,predicted@1,predicted@1:threshold --repeats 5 --profile_dir /tmp/dprof/dec_now21
  decode dec_xla21 --plan T5-11B-full:1 --impls off,pallas,predicted@1:threshold --decode_attention=xla --repeats 5
}

round22() {  # the predicted block fused into one kernel (rows = k); the trained local T5's predictor through it
  export CUDA_VISIBLE_DEVICES=0
  decode dec_local22 --workdir runs/carry/t5_pydocs --input_file runs/carry/prompts.jsonl \
    --predictor 32:192 --max_decode_len 64 --repeats 3
  decode dec_now22 --plan T5-Base:1,T5-3B-full:1,T5-11B-full:1 \
    --impls off,pallas,predicted@1,predicted@1:threshold --repeats 5 --profile_dir /tmp/dprof/dec_now22
}

round23() {  # the fused predicted-block kernel alone over its chunk and warps (it also swept a load order, since removed)
  export CUDA_VISIBLE_DEVICES=0
  kernels --fused
}

round24() {  # the fused kernel's kept rows against XLA's (--check); the batch sweep with the attention kernel
  export CUDA_VISIBLE_DEVICES=0
  decode dec_sweep24 --check --plan T5-3B:1,T5-3B:4,T5-3B:16,T5-3B:64 --impls off,pallas --repeats 5
}

round3_both() {  # after both streams: data parallel over the two GPUs
  export CUDA_VISIBLE_DEVICES=0,1
  END=$((SECONDS + ${LIMIT_BOTH:-100}))
  bench both vit_2gpu --config=configs/vit.py $VB --meshes=1x1x1,2x1x1
}

nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv >"$OUT/gpu.txt" 2>&1
END=$((SECONDS + LIMIT))
R=${ROUND:-2}
if declare -F "round$R" >/dev/null; then  # a round of one stream
  "round$R"
elif declare -F "round${R}_gpu0" >/dev/null; then  # a stream a GPU, then what needs both
  "round${R}_gpu0" &
  if declare -F "round${R}_gpu1" >/dev/null; then "round${R}_gpu1" & fi
  wait
  if declare -F "round${R}_both" >/dev/null; then "round${R}_both"; fi
else
  vit_then_decode &
  t5_stream &
  wait
fi
