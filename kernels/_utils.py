"""Launch settings shared by the attention kernels: probes, autotune lists, shared-memory caps.

Every autotune list is pruned by an estimate of the shared memory a config needs, against the
device's limit or a caller's cap, so the same lists work on consumer GPUs (about 99 KB of shared
memory per block on sm_86/sm_89) and on Hopper (227 KB).
"""

from __future__ import annotations

import functools
import os

import torch
import triton

# Shared memory per block on RTX 30/40 (sm_86, sm_89): 100 KB minus 1 KB reserved by the driver.
CONSUMER_SMEM_BYTES = 99 * 1024

_smem_cap: int | None = None


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _patch_interpreter_index() -> None:
    """Let the interpreter use 1-element scalars as `range` bounds under numpy >= 2.4.

    Workaround [2026-11-23]: triton 3.6's interpreter implements `tensor.__index__` as
    `int(handle.data)`, and its scalars are 1-element arrays, which numpy 2.4 no longer converts
    ("only 0-dimensional arrays can be converted"), so `range(lo, hi)` with run-time bounds fails.
    """
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_hybrid_lsp_patched", False):
        return

    def patched(tensor, scope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._hybrid_lsp_patched = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched


if interpreting():
    _patch_interpreter_index()


def set_smem_cap(cap: int | None) -> None:
    """Cap the shared memory every autotune list may use (None: the device's own limit).

    Used to check on a large GPU that the configs kept for a consumer GPU compile and run.
    A cap applies to kernels autotuned after the call; the caller clears autotune caches.
    """
    global _smem_cap
    _smem_cap = cap


def smem_cap() -> int:
    """The shared memory, in bytes, a config may use on the current device."""
    if _smem_cap is not None:
        return _smem_cap
    if interpreting() or not torch.cuda.is_available():
        return CONSUMER_SMEM_BYTES
    return _device_smem(torch.cuda.current_device())


@functools.cache
def _device_smem(dev: int) -> int:
    # Cached: decode calls took 2 ms on the H100 [2026-11-23] while this driver query ran on
    # every launch; with the cache see docs/KERNELS.md for the re-measured figure.
    props = triton.runtime.driver.active.utils.get_device_properties(dev)
    return int(props["max_shared_mem"])


def device_arch() -> int:
    """Compute capability as an int (90 for sm_90); 86 under the interpreter or without CUDA."""
    if interpreting() or not torch.cuda.is_available():
        return 86
    return _capability(torch.cuda.current_device())


@functools.cache
def _capability(dev: int) -> int:
    major, minor = torch.cuda.get_device_capability(dev)
    return 10 * major + minor


def attn_smem_bytes(block_m: int, block_n: int, head_dim: int, num_stages: int,
                    elem: int = 2, arch: int | None = None) -> int:
    """Estimate of a flash-attention forward tile's shared memory, in bytes.

    Q (block_m x D) plus K and V tiles (block_n x D each) in max(2, num_stages - 1) buffers;
    on sm_90+ (wgmma reads P from shared memory) also P (block_m x block_n) and one more Q.
    Fitted [2026-11-23] to triton 3.6's `metadata.shared` for the configs of
    local_attention._FWD_CONFIGS compiled offline for sm_86 (exact for 2-3 stages, over at 4)
    and sm_90 (exact or over); tests/kernels/test_smem.py re-checks it against the compiler.
    """
    arch = device_arch() if arch is None else arch
    buffers = max(2, num_stages - 1)
    q = block_m * head_dim * elem
    kv = 2 * buffers * block_n * head_dim * elem
    if arch >= 90:
        return 2 * q + block_m * block_n * elem + kv
    return q + kv


def prune_attn_configs(configs: list[triton.Config], named_args: dict, **_: object
                       ) -> list[triton.Config]:
    """Keep configs whose shared-memory estimate fits the cap (autotune's early_config_prune)."""
    head_dim = int(named_args["HEAD_DIM"]) if "HEAD_DIM" in named_args else 128
    cap = smem_cap()
    kept = [c for c in configs
            if attn_smem_bytes(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], head_dim,
                               c.num_stages) <= cap]
    if not kept:
        raise RuntimeError(f"Expected an attention config within {cap} bytes of shared memory, "
                           f"got none for head_dim {head_dim}")
    return kept


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (at least 1)."""
    return 1 << max(0, (int(n) - 1).bit_length())


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise ValueError unless q (B,Hq,T,D), k=v (B,Hkv,S,D) fit the kernels' contract."""
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"Expected q (B,Hq,T,D), k=v (B,Hkv,S,D), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[1] % k.shape[1]:
        raise ValueError(f"Incompatible q {tuple(q.shape)} and k {tuple(k.shape)}")
    if q.shape[3] not in (64, 128):
        raise ValueError(f"Expected head_dim 64 or 128, got {q.shape[3]}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"Expected one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.stride(3) != 1 or k.stride(3) != 1 or v.stride(3) != 1:
        raise ValueError("Expected a unit stride on head_dim")


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """True when the Triton kernels take these tensors on their device (used by engine)."""
    try:
        check_qkv(q, k, v)
    except ValueError:
        return False
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
