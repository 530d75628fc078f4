"""The training loop on synthetic Rust: loss falls, resume is exact, overrides are checked."""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import config as engine_config
from engine.tokenizer import Tokenizer, train_tokenizer
from engine.train import (
    ChunkStream,
    ConfigOverrideError,
    Document,
    TrainConfig,
    chunk_len,
    eval_tokens_in_memory,
    flops_per_token,
    lr_at,
    parse_overrides,
    sample_docs,
    score_documents,
    seq_len_at,
    split_parts,
    train,
)


def synthetic_rust(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names = ["alpha", "beta", "gamma", "delta", "count", "total", "index", "value"]
    types = ["u32", "i64", "usize", "f32"]
    out = []
    for i in range(n):
        a, b = rng.sample(names, 2)
        t = rng.choice(types)
        out.append(
            f"/// Adds two numbers.\npub fn {a}_{i}({a}: {t}, {b}: {t}) -> {t} {{\n"
            f"    let {a}_{b} = {a} + {b};\n    {a}_{b}\n}}\n\n"
            f"#[derive(Debug, Clone)]\npub struct S{i} {{\n    {a}: {t},\n    {b}: Vec<{t}>,\n}}\n"
        )
    return out


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    d = tmp_path_factory.mktemp("rs")
    for i, text in enumerate(synthetic_rust(40, seed=1)):
        (d / f"f{i}.rs").write_text(text)
    return train_tokenizer(d, 400)


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(engine_config.CONFIGS, "test-tiny", dict(
        dim=32, n_layer=2, n_head=2, n_kv_head=1, ffn_dim=64, window=8, global_every=2))
    return "test-tiny"


def docs(n: int, seed: int) -> list[Document]:
    return [Document(f"crate{i % 3}", f"src/m{i}.rs", t)
            for i, t in enumerate(synthetic_rust(n, seed))]


def tiny_config(tmp_path: Path, model: str, **kw) -> TrainConfig:
    base = parse_overrides(["tiny"])
    settings = dict(model=model, max_steps=40, warmup_steps=4, lr=1e-2, min_lr=1e-3,
                    out_dir=str(tmp_path / "run"))
    return replace(base, **{**settings, **kw})


def test_tiny_run_decreases_loss(tmp_path: Path, tok: Tokenizer, tiny_model: str) -> None:
    cfg = tiny_config(tmp_path, tiny_model)
    out = train(cfg, tokenizer=tok, train_docs=docs(60, 2), val_docs=docs(8, 3),
                test_docs=docs(4, 4))
    losses = [out["losses"][s] for s in sorted(out["losses"])]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert out["val_loss"] < math.log(tok.vocab_size)
    assert 0 < out["val_bpb"] < 8 and "bpb_0K-1K" in out["val"]
    assert (tmp_path / "run" / "ckpt.pt").exists()


def test_resume_gives_identical_next_steps(tmp_path: Path, tok: Tokenizer,
                                           tiny_model: str) -> None:
    data = dict(tokenizer=tok, train_docs=docs(30, 5), val_docs=docs(4, 6))
    full = train(tiny_config(tmp_path / "a", tiny_model, max_steps=6), **data)
    first = train(tiny_config(tmp_path / "b", tiny_model, max_steps=6, stop_step=3), **data)
    assert sorted(first["losses"]) == [1, 2, 3]
    ck = torch.load(tmp_path / "b" / "run" / "ckpt.pt", weights_only=True)
    assert ck["step"] == 3 and ck["config"]["stop_step"] == 3
    resumed = train(tiny_config(tmp_path / "b", tiny_model, max_steps=6), **data)
    assert sorted(resumed["losses"]) == [4, 5, 6]
    for s in (4, 5, 6):
        assert resumed["losses"][s] == full["losses"][s]


def test_full_pipeline_with_schedule_context_test_eval_and_export(
        tmp_path: Path, tok: Tokenizer, tiny_model: str) -> None:
    cfg = tiny_config(tmp_path, tiny_model, max_steps=8, seq_schedule="16:0.5,32:0.5",
                      context_share=0.3, all_global=False, test_eval=True,
                      test_contexts="16,64", export=str(tmp_path / "m.gguf"),
                      export_part_mib=1, log_interval=1)
    out = train(cfg, tokenizer=tok, train_docs=docs(30, 9), val_docs=docs(6, 10),
                test_docs=docs(6, 11))
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["seq_len"] for r in log if "seq_len" in r] == [16] * 4 + [32] * 4
    t = out["test"]
    assert set(t) >= {"C16", "C64", "xz_crate_bpb"} and t["crates"] == 3
    assert t["C16"]["bytes"] == t["C64"]["bytes"] > 0 and "bpb_0K-1K" in t["C64"]
    parts = [Path(p) for p in out["export"]["parts"]]
    joined = b"".join(p.read_bytes() for p in parts)
    assert joined == (tmp_path / "m.gguf").read_bytes()
    comparison = tiny_config(tmp_path / "g", tiny_model, max_steps=2, all_global=True)
    assert train(comparison, tokenizer=tok, train_docs=docs(10, 9),
                 val_docs=docs(4, 10))["model_args"]["all_global"] is True


def test_chunk_stream_is_deterministic_and_covers_chunks() -> None:
    tokens = np.arange(10 * 8 + 1)
    s = ChunkStream(tokens, 8, seed=1)
    rows = s.rows(0, 10, 4)
    assert rows.shape == (20, 5)
    starts = sorted(rows[::2, 0].tolist())
    assert starts == list(range(0, 80, 8))  # one pass visits every chunk once
    assert torch.equal(rows[1, :], torch.arange(rows[0, 0] + 4, rows[0, 0] + 9))
    assert torch.equal(ChunkStream(tokens, 8, seed=1).rows(3, 4, 8), s.rows(3, 4, 8))
    assert not torch.equal(s.rows(0, 10, 8), s.rows(10, 10, 8))  # a new pass, a new order
    with pytest.raises(ValueError, match="must divide"):
        s.rows(0, 1, 3)


def test_score_documents_matches_a_direct_sum(tok: Tokenizer, tiny_model: str) -> None:
    from engine.config import from_name
    from engine.model import Transformer
    from engine.train import byte_lengths

    torch.manual_seed(0)
    model = Transformer(from_name(tiny_model, tok.vocab_size))
    model.init_weights(seed=0)
    tokens, recs = eval_tokens_in_memory(tok, docs(3, 12))
    cfg = TrainConfig(bf16=False)
    nb = byte_lengths(tok)
    dev = torch.device("cpu")
    full = score_documents(model, tokens, recs, 10_000, nb, dev, cfg)
    # With a context longer than every document, one forward per document is the truth.
    nats = nbytes = 0.0
    for d in recs:
        ids = torch.from_numpy(tokens[d["start"]:d["start"] + d["tokens"]])[None]
        nll = torch.nn.functional.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:],
                                                reduction="none").double()
        b = nb[ids[0, 1:]]
        nats += (nll * (b > 0)).sum().item()
        nbytes += b.sum().item()
    assert full["bpb"] == pytest.approx(nats / nbytes / math.log(2), rel=1e-6)
    short = score_documents(model, tokens, recs, 16, nb, dev, cfg)
    assert short["bytes"] == full["bytes"]
    # Right-padding windows to a few fixed lengths (as on CUDA) changes nothing: causal.
    padded = score_documents(model, tokens, recs, 200, nb, dev, cfg, batch_tokens=300,
                             pad=True)
    assert padded["bpb"] == pytest.approx(
        score_documents(model, tokens, recs, 200, nb, dev, cfg)["bpb"], rel=1e-6)


def test_override_parsing() -> None:
    cfg = parse_overrides(["--lr=1e-3", "--seq-len=256", "--test_eval=true", "--model=base"])
    assert (cfg.lr, cfg.seq_len, cfg.test_eval, cfg.model) == (1e-3, 256, True, "base")
    assert parse_overrides([]) == TrainConfig()
    gpu = parse_overrides(["gpu", "--lr=1e-3"])
    assert gpu.model == "base" and gpu.lr == 1e-3 and chunk_len(gpu) == 16384
    assert parse_overrides(["gpu-global"]).all_global
    with pytest.raises(ConfigOverrideError, match="Unknown preset"):
        parse_overrides(["huge"])
    with pytest.raises(ConfigOverrideError, match="Unknown config key 'learning_rate'"):
        parse_overrides(["--learning_rate=1e-3"])
    with pytest.raises(ConfigOverrideError, match="expected int"):
        parse_overrides(["--seq_len=1.5"])
    with pytest.raises(ConfigOverrideError, match="expected float"):
        parse_overrides(["--lr=fast"])
    with pytest.raises(ConfigOverrideError, match="expected a bool"):
        parse_overrides(["--resume=maybe"])
    with pytest.raises(ConfigOverrideError, match="Expected --key=value"):
        parse_overrides(["--lr", "1e-3"])


def test_lr_and_sequence_schedules() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(20, cfg, progress=1.0) == pytest.approx(0.1)
    wsd = replace(cfg, schedule="wsd", decay_frac=0.2)
    assert lr_at(50, wsd, progress=0.5) == 1.0
    assert lr_at(50, wsd, progress=0.9) == pytest.approx(0.55)
    assert lr_at(50, wsd, progress=1.0) == pytest.approx(0.1)
    sched = TrainConfig(seq_schedule="4096:0.4,8192:0.35,16384:0.25")
    assert [seq_len_at(p, sched) for p in (0.0, 0.39, 0.4, 0.74, 0.75, 1.0)] == \
        [4096, 4096, 8192, 8192, 16384, 16384]


def test_flops_per_token_of_the_base_model() -> None:
    from engine.config import from_name

    args = from_name("base", 16384)
    f = flops_per_token(args, 8192)
    assert 6 * args.num_params() < f < 6 * args.num_params() * 1.5
    glob = from_name("base", 16384, all_global=True)
    assert flops_per_token(glob, 16384) > flops_per_token(args, 16384)


def test_sample_docs_and_split_parts(tmp_path: Path) -> None:
    recs = [{"crate": f"c{i % 4}", "version": str(i), "start": 10 * i, "tokens": 10}
            for i in range(12)]
    picked = sample_docs(recs, 30, seed=0)
    assert len(picked) == 3 and len({d["crate"] for d in picked}) == 3
    assert sample_docs(recs, 0, seed=0) == recs
    f = tmp_path / "x.bin"
    f.write_bytes(bytes(range(256)) * 10_000)
    parts = split_parts(f, 1)
    assert [p.stat().st_size for p in parts] == [2**20, 2**20, 2_560_000 - 2 * 2**20]


def test_flex_training_attention_matches_the_model(tiny_model: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU training path's masks (FlexAttention, forward on the CPU) equal the model's."""
    from torch.nn.attention.flex_attention import flex_attention

    from engine import train as train_mod
    from engine.train import build_model, token_nats

    monkeypatch.setattr(train_mod, "_FLEX", flex_attention)  # eager: no inductor in tests

    dev = torch.device("cpu")
    ref, _ = build_model(TrainConfig(model=tiny_model, attention="sdpa"), 300, dev)
    flex, _ = build_model(TrainConfig(model=tiny_model, attention="flex"), 300, dev)
    assert type(flex.layers[0].attention).__name__ == "FlexTrainAttention"
    flex.load_state_dict(ref.state_dict())
    rows = torch.randint(0, 300, (2, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(token_nats(ref, rows), token_nats(flex, rows), atol=1e-5)
    # causal layers through SDPA's fused kernels: the same function, hybrid and all-global
    for all_global in (False, True):
        cfg = TrainConfig(model=tiny_model, attention="sdpa", all_global=all_global)
        ref, _ = build_model(cfg, 300, dev)
        mixed, _ = build_model(replace(cfg, attention="flex", causal_sdpa=True), 300, dev)
        assert all(b.attention.causal_sdpa for b in mixed.layers)
        mixed.load_state_dict(ref.state_dict())
        with torch.no_grad():
            assert torch.allclose(token_nats(ref, rows), token_nats(mixed, rows), atol=1e-5)


def test_bench_train_prints_throughput(tiny_model: str, capsys: pytest.CaptureFixture) -> None:
    from engine.bench_train import bench_train

    rc = bench_train(["tiny", f"--model={tiny_model}", "--vocab_size=300", "--bench_steps=2",
                      "--bench_warmup=1", "--peak_tflops=1"])
    out = capsys.readouterr().out
    assert rc == 0 and "tokens/s" in out and "MFU" in out and "%" in out
    assert bench_train(["--nope=1"]) == 2
