"""lazy_jax.profiling: a trace of a jitted function is found, read back and summed by event name."""

import jax
import jax.numpy as jnp

from lazy_jax import profiling


def test_trace_is_summed_by_event_per_device_timeline(tmp_path):
    f = jax.jit(lambda a: jnp.tanh(a @ a).sum())
    a = jnp.ones((128, 128))
    f(a).block_until_ready()  # compiled outside the trace
    with profiling.trace(str(tmp_path)):
        for _ in range(3):
            f(a).block_until_ready()
    (trace_file,) = profiling.trace_files(str(tmp_path))
    lines = profiling.summarize(str(trace_file), top=5)
    assert lines, "no device timeline found"
    for line in lines:
        assert 0 < len(line["events"]) <= 5
        assert abs(sum(line["kinds"].values()) - line["busy_ms"]) < 1e-6 * max(1.0, line["busy_ms"])
        assert sum(e["ms"] for e in line["events"]) <= line["busy_ms"] + 1e-9
    assert "ms busy per step" in profiling.markdown(lines, steps=3)


def test_event_kinds():
    assert profiling.kind_of("nvjet_sm90_tst_192x192_64x3_1x2_h_bz_coopB_splitK_NTN") == "matmul"
    assert profiling.kind_of("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16") == "attention (fused)"
    assert profiling.kind_of("input_reduce_fusion_207") == "reduction"
    assert profiling.kind_of("loop_transpose_fusion") == "copy / memset"
    assert profiling.kind_of("loop_add_fusion") == "fusion"
