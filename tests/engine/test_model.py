"""Model, attention dispatch and configuration: unit tests without llama.cpp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.attention import global_attention, local_attention
from engine.config import ConfigError, ModelArgs, from_name
from engine.gguf_io import ExportError, gguf_name, save_gguf, torch_name
from engine.model import Transformer, apply_rope, rope_tables
from kernels.reference import attention_mask, global_attention_ref, local_attention_ref


def rand_qkv(b, hq, hkv, tq, tk, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, tq, d, generator=g)
    k = torch.randn(b, hkv, tk, d, generator=g)
    v = torch.randn(b, hkv, tk, d, generator=g)
    return q, k, v


@pytest.mark.parametrize("window", [1, 5, 16, 64])
@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (8, 1)])
@pytest.mark.parametrize("q_start,tq", [(0, 37), (20, 17), (50, 1)])
def test_local_attention_matches_reference(window, hq, hkv, q_start, tq):
    tk = q_start + tq
    q, k, v = rand_qkv(2, hq, hkv, tq, tk, 16)
    got = local_attention(q, k, v, window=window, q_start=q_start)
    ref = local_attention_ref(q, k, v, window=window, q_start=q_start)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q_start,tq", [(0, 33), (9, 24), (40, 1)])
def test_global_attention_matches_reference(q_start, tq):
    q, k, v = rand_qkv(1, 4, 2, tq, q_start + tq, 32, seed=1)
    got = global_attention(q, k, v, q_start=q_start)
    assert torch.allclose(got, global_attention_ref(q, k, v, q_start=q_start), atol=1e-5)


def test_mask_semantics():
    m = attention_mask(4, 6, q_start=2, window=2)
    # query at position 2 sees keys 1, 2; position 5 sees 4, 5
    assert m[0].tolist() == [False, True, True, False, False, False]
    assert m[3].tolist() == [False, False, False, False, True, True]


def test_reference_by_hand():
    """A single-head, two-key case worked out by hand."""
    q = torch.tensor([[[[1.0, 0.0]]]])
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    v = torch.tensor([[[[2.0, 0.0], [0.0, 4.0]]]])
    w = torch.softmax(torch.tensor([1 / math.sqrt(2), 0.0]), 0)
    expect = w[0] * v[0, 0, 0] + w[1] * v[0, 0, 1]
    got = global_attention_ref(q, k, v, q_start=1)
    assert torch.allclose(got[0, 0, 0], expect)
    assert torch.allclose(local_attention_ref(q, k, v, window=1, q_start=1)[0, 0, 0], v[0, 0, 1])


def test_rope_tables_follow_ggml_order():
    cos, sin = rope_tables(70000, 16, 10000.0)
    scale = np.float32(10000.0) ** np.float32(-2 / 16)
    theta = np.float32(65535)
    for _ in range(3):
        theta = np.float32(theta * scale)
    assert cos[65535, 3].item() == pytest.approx(float(np.cos(theta)), abs=1e-6)


def test_apply_rope_rotates_pairs():
    x = torch.zeros(1, 1, 1, 4)
    x[..., 0] = 1.0  # pair (0, 1)
    cos, sin = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])  # 90 degrees on pair 0
    out = apply_rope(x, cos, sin)
    assert out.flatten().tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_layer_pattern_matches_llama_cpp():
    a = ModelArgs(vocab_size=10, dim=32, n_head=2, n_kv_head=1, n_layer=8, global_every=4)
    assert a.layer_kinds == ("local",) * 3 + ("global",) + ("local",) * 3 + ("global",)
    b = ModelArgs(vocab_size=10, dim=32, n_head=2, n_kv_head=1, n_layer=4, all_global=True)
    assert set(b.layer_kinds) == {"global"}


@pytest.mark.parametrize("bad", [
    dict(dim=30, n_head=4), dict(n_kv_head=3, n_head=4), dict(window=0), dict(global_every=0),
    dict(vocab_size=0), dict(norm_eps=0.0),
])
def test_config_rejects_inexpressible(bad):
    kw = dict(vocab_size=10, dim=32, n_head=4, n_kv_head=2)
    kw.update(bad)
    with pytest.raises(ConfigError):
        ModelArgs(**kw)


def test_comparison_model_runs_and_differs():
    args = ModelArgs(vocab_size=50, dim=32, n_layer=2, n_head=4, n_kv_head=2, ffn_dim=64,
                     window=4, global_every=2)
    hybrid = Transformer(args)
    hybrid.init_weights(seed=0)
    glob = Transformer(ModelArgs(**{**args.to_dict(), "all_global": True}))
    glob.load_state_dict(hybrid.state_dict())
    x = torch.randint(0, 50, (1, 20))
    with torch.no_grad():
        assert not torch.allclose(hybrid(x), glob(x))
    assert all(blk.attention.rope and not blk.attention.local for blk in glob.layers)


def test_exporter_refuses_what_cohere2_cannot_run(tmp_path):
    class FakeTok:
        vocab_size = 50

    for kw in [dict(all_global=True), dict(global_every=1), dict(n_layer=3, global_every=2)]:
        args = ModelArgs(**{**dict(vocab_size=50, dim=32, n_layer=2, n_head=4, n_kv_head=2,
                                   ffn_dim=64, window=4, global_every=2), **kw})
        m = Transformer(args)
        with pytest.raises(ExportError):
            save_gguf(tmp_path / "x.gguf", args, m.state_dict(), FakeTok())
        assert not (tmp_path / "x.gguf").exists()


def test_tensor_name_mapping_round_trips():
    m = Transformer(from_name("demo", 300))
    for name in m.state_dict():
        assert torch_name(gguf_name(name)) == name
    with pytest.raises(ExportError):
        gguf_name("layers.0.attention.bias")


def test_forward_rejects_positions_past_context():
    args = ModelArgs(vocab_size=20, dim=16, n_layer=2, n_head=2, n_kv_head=1, ffn_dim=32,
                     window=4, global_every=2, context_length=32)
    m = Transformer(args)
    with pytest.raises(ValueError, match="context_length"):
        m(torch.zeros(1, 8, dtype=torch.long), start=30)


def test_last_only_equals_last_row():
    args = ModelArgs(vocab_size=40, dim=32, n_layer=2, n_head=4, n_kv_head=2, ffn_dim=64,
                     window=4, global_every=2)
    m = Transformer(args)
    m.init_weights(seed=3)
    x = torch.randint(0, 40, (2, 11))
    with torch.no_grad():
        full, last = m(x), m(x, last_only=True)
    assert last.shape == (2, 1, 40)
    assert torch.allclose(full[:, -1:], last, atol=1e-6)
