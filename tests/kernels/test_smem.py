"""The autotune lists fit a consumer GPU's shared memory (about 99 KB on sm_86/sm_89)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton

from kernels._utils import CONSUMER_SMEM_BYTES, attn_smem_bytes, prune_attn_configs, set_smem_cap
from kernels.local_attention import _FWD_CONFIGS, _attn_fwd_kernel


def compile_shared(arch: int, head_dim: int, cfg: dict) -> int:
    """Compile the prefill kernel offline for `arch` (no GPU needed) and return its shared bytes.

    Called in a subprocess without TRITON_INTERPRET: the interpreter's functions cannot compile.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _attn_fwd_kernel
    names = fn.arg_names
    consts = {"HEAD_DIM": head_dim, "COUNT": False,
              "BLOCK_M": cfg["BLOCK_M"], "BLOCK_N": cfg["BLOCK_N"]}
    sig = {}
    for n in names:
        if n in consts:
            sig[n] = "constexpr"
        elif n in ("Q", "K", "V", "Out"):
            sig[n] = "*fp16"
        elif n == "Count":
            sig[n] = "*i32"
        else:
            sig[n] = "fp32" if n == "qk_scale" else "i32"
    constexprs = {(names.index(n),): val for n, val in consts.items()}
    # Launch-time specialisation marks pointers and strides 16-divisible; without the hint the
    # compiler cannot use async copies and the software pipeline (and its buffers) disappears.
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names
             if n in ("Q", "K", "V", "Out", "Count") or n.startswith("stride_")}
    kernel = triton.compile(ASTSource(fn, sig, constexprs, attrs=attrs),
                            target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": cfg["num_warps"],
                                     "num_stages": cfg["num_stages"]})
    return int(kernel.metadata.shared)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_prune_keeps_configs_under_consumer_cap(head_dim: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # The consumer GPUs are sm_86/sm_89: prune with their estimate also on a Hopper test machine
    # (the sm_90 estimate under a 99 KB cap kept one config at head_dim 128 on the H100).
    import kernels._utils as utils

    monkeypatch.setattr(utils, "device_arch", lambda: 86)
    set_smem_cap(CONSUMER_SMEM_BYTES)
    try:
        kept = prune_attn_configs(_FWD_CONFIGS, {"HEAD_DIM": head_dim})
    finally:
        set_smem_cap(None)
    assert len(kept) >= 3
    for c in kept:
        assert attn_smem_bytes(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], head_dim,
                               c.num_stages, arch=86) <= CONSUMER_SMEM_BYTES
    set_smem_cap(16 * 1024)
    try:
        with pytest.raises(RuntimeError):
            prune_attn_configs(_FWD_CONFIGS, {"HEAD_DIM": head_dim})
    finally:
        set_smem_cap(None)


def test_largest_consumer_config_compiles_within_cap() -> None:
    """The compiler's own figure for the biggest kept head_dim-128 config, built for sm_86."""
    set_smem_cap(CONSUMER_SMEM_BYTES)
    try:
        kept = prune_attn_configs(_FWD_CONFIGS, {"HEAD_DIM": 128})
    finally:
        set_smem_cap(None)
    cfg = max(kept, key=lambda c: attn_smem_bytes(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"],
                                                  128, c.num_stages, arch=86))
    spec = dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    code = ("import json, sys; from tests.kernels.test_smem import compile_shared; "
            f"print(json.dumps(compile_shared(86, 128, {spec!r})))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    shared = json.loads(res.stdout.strip().splitlines()[-1])
    est = attn_smem_bytes(cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], 128, cfg.num_stages,
                          arch=86)
    assert shared <= min(est, CONSUMER_SMEM_BYTES)
