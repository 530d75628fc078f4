"""The kernels at real shapes on a GPU: bf16/fp16, long caches, autotuning under a 99 KB cap."""

from __future__ import annotations

import pytest
import torch

from kernels.reference import attention_ref
from tests.kernels.kernel_checks import TOL, poisoned, rel_err

pytestmark = pytest.mark.gpu


def _qkv(b: int, hq: int, hkv: int, tq: int, tk: int, d: int, dtype: torch.dtype, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda h, t: torch.randn(b, h, t, d, device="cuda", dtype=dtype, generator=g)  # noqa: E731
    return mk(hq, tq), mk(hkv, tk), mk(hkv, tk)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("group", [1, 8])
def test_local_chunked_prefill(dtype: torch.dtype, d: int, group: int) -> None:
    from kernels.local_attention import attention_fwd

    q_start, tq, window = 3001, 1999, 1024  # the chunk sees 3001 cached tokens
    q, k, v = _qkv(1, 2 * group, 2, tq, q_start + tq, d, dtype, seed=group * d)
    out = poisoned(q.shape, dtype, "cuda")
    got, _ = attention_fwd(q, k, v, window=window, q_start=q_start, out=out)
    ref = attention_ref(q, k, v, q_start=q_start, window=window)
    assert rel_err(got, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 128])
def test_global_prefill(dtype: torch.dtype, d: int) -> None:
    from kernels.global_attention import global_attention

    q, k, v = _qkv(2, 8, 2, 1500, 2500, d, dtype, seed=d)
    got = global_attention(q, k, v, q_start=1000)
    assert rel_err(got, attention_ref(q, k, v, q_start=1000)) < TOL[dtype]


@pytest.mark.parametrize("tq", [1, 4])
@pytest.mark.parametrize("window", [None, 1024])
@pytest.mark.parametrize("d", [64, 128])
def test_decode_long_cache(tq: int, window: int | None, d: int) -> None:
    from kernels.decode_attention import decode_attention

    tk = 65536
    q, k, v = _qkv(1, 8, 2, tq, tk, d, torch.bfloat16, seed=tq + d)
    got = decode_attention(q, k, v, q_start=tk - tq, window=window,
                           out=poisoned(q.shape, torch.bfloat16, "cuda"))
    ref = attention_ref(q, k, v, q_start=tk - tq, window=window)
    assert rel_err(got, ref) < TOL[torch.bfloat16]


@pytest.mark.parametrize("top_k", [8, 1000])
@pytest.mark.parametrize("d", [64, 128])
def test_sparse_prefill(top_k: int, d: int) -> None:
    from kernels.sparse_attention import (
        selection_to_block_mask,
        sparse_attention,
        sparse_attention_ref,
        sparse_block_mask_ref,
    )

    n, q_start = 4096, 1024
    q, k, v = _qkv(1, 8, 2, n - q_start, n, d, torch.bfloat16, seed=top_k + d)
    got, (idx, cnt), _ = sparse_attention(q, k, v, q_start=q_start, top_k=top_k,
                                          out=poisoned(q.shape, torch.bfloat16, "cuda"))
    mask = selection_to_block_mask(idx, cnt, q_start=q_start, tq=q.shape[2], n_kb=n // 128,
                                   block=128, n_local=2).view(1, 8, -1, n // 128)
    want = sparse_block_mask_ref(q, k, q_start=q_start, top_k=top_k)
    # bf16 pooling sums differ in order from torch's: allow a near-tie to flip a block or two.
    assert (mask != want).float().mean().item() < 1e-3
    ref = sparse_attention_ref(q, k, v, q_start=q_start, block_mask=mask)
    assert rel_err(got, ref) < TOL[torch.bfloat16]
    if top_k >= n // 128:
        assert rel_err(got, attention_ref(q, k, v, q_start=q_start)) < TOL[torch.bfloat16]


@pytest.mark.parametrize("d", [64, 128])
def test_autotune_under_consumer_smem_cap(d: int) -> None:
    """Autotuning with the list pruned to 99 KB compiles, fits and gives right answers."""
    from kernels import local_attention as la
    from kernels._utils import CONSUMER_SMEM_BYTES, set_smem_cap

    set_smem_cap(CONSUMER_SMEM_BYTES)
    la._attn_fwd_tuned.cache.clear()
    # Earlier tests compiled uncapped configs of the same kernel: check only what this
    # capped autotuning run compiles.
    before = {id(kernel) for kernel in _compiled(la._attn_fwd_kernel)}
    try:
        q, k, v = _qkv(1, 8, 2, 3000, 3000, d, torch.bfloat16, seed=d + 1)
        got = la.local_attention(q, k, v, window=700, q_start=0)
        assert rel_err(got, attention_ref(q, k, v, q_start=0, window=700)) < 1e-2
        for kernel in _compiled(la._attn_fwd_kernel):
            if id(kernel) in before:
                continue
            if kernel.metadata.shared > CONSUMER_SMEM_BYTES:
                cfg = la._attn_fwd_tuned.best_config
                pytest.fail(f"{cfg} uses {kernel.metadata.shared} bytes of shared memory")
    finally:
        set_smem_cap(None)
        la._attn_fwd_tuned.cache.clear()


def _compiled(fn) -> list:
    """Every compiled variant of a JIT function so far (triton 3.6's per-device cache)."""
    out = []
    for cache in fn.device_caches.values():
        out.extend(cache[0].values())
    return out


def test_local_cost_scales_with_length_not_square() -> None:
    """Block skipping on the GPU: 64K tokens take about twice the time of 32K."""
    from triton.testing import do_bench

    from kernels.local_attention import local_attention

    times = []
    for n in (32768, 65536):
        q, k, v = _qkv(1, 8, 2, n, n, 64, torch.bfloat16, seed=n)
        local_attention(q, k, v, window=1024, q_start=0)
        times.append(do_bench(lambda q=q, k=k, v=v: local_attention(q, k, v, window=1024,
                                                                    q_start=0),
                              return_mode="median"))
    assert 1.6 < times[1] / times[0] < 2.5, times


@pytest.mark.parametrize("tq", [1, 300])
def test_engine_dispatch_uses_kernels(tq: int) -> None:
    """engine.attention routes CUDA bf16 to the kernels and agrees with the reference."""
    from engine.attention import global_attention, local_attention

    q, k, v = _qkv(1, 8, 2, tq, 2000, 64, torch.bfloat16, seed=tq)
    q_start = 2000 - tq
    got = local_attention(q, k, v, window=512, q_start=q_start)
    assert rel_err(got, attention_ref(q, k, v, q_start=q_start, window=512)) < 1e-2
    got = global_attention(q, k, v, q_start=q_start)
    assert rel_err(got, attention_ref(q, k, v, q_start=q_start)) < 1e-2


@pytest.mark.parametrize("window", [None, 1024])
def test_decode_cuda_graph_replays_at_moving_positions(window: int | None) -> None:
    """One captured decode graph, position in a device tensor, right at every later position."""
    from kernels.decode_attention import decode_attention

    tk = 65536
    q, k, v = _qkv(1, 8, 2, 1, tk, 64, torch.bfloat16, seed=11)
    pos = torch.full((1,), 100, dtype=torch.int32, device="cuda")
    out = poisoned(q.shape, torch.bfloat16, "cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        decode_attention(q, k, v, q_start=pos, window=window, out=out)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        decode_attention(q, k, v, q_start=pos, window=window, out=out)
    for p in (0, 777, 40000, tk - 1):
        pos.fill_(p)
        out.fill_(float("nan"))
        graph.replay()
        ref = attention_ref(q, k, v, q_start=p, window=window)
        assert rel_err(out, ref) < TOL[torch.bfloat16], p
