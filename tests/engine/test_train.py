"""The training loop on synthetic Rust: loss falls, resume is exact, overrides are checked."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine import config as engine_config
from engine.tokenizer import Tokenizer, train_tokenizer
from engine.train import (
    ConfigOverrideError,
    Document,
    PackedStream,
    TrainConfig,
    lr_at,
    parse_overrides,
    sample_documents,
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
    base = TrainConfig(model=model, seq_len=32, batch_size=4, max_steps=40, warmup_steps=4,
                       lr=1e-2, min_lr=1e-3, eval_interval=1000, eval_tokens=256,
                       ckpt_interval=1000, log_interval=1000, out_dir=str(tmp_path / "run"),
                       threads=1, device="cpu", bf16=False, max_minutes=0.0,
                       test_eval=False)
    return replace(base, **kw)


def test_tiny_run_decreases_loss(tmp_path: Path, tok: Tokenizer, tiny_model: str) -> None:
    cfg = tiny_config(tmp_path, tiny_model)
    out = train(cfg, tokenizer=tok, train_docs=docs(60, 2), val_docs=docs(8, 3),
                test_docs=docs(4, 4))
    losses = [out["losses"][s] for s in sorted(out["losses"])]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    assert out["val_loss"] < math.log(tok.vocab_size)
    assert 0 < out["val_bpb"] < 8
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


def test_packed_stream_state_round_trip(tok: Tokenizer) -> None:
    cfg = TrainConfig(seq_len=16, fim_rate=0.5)
    a = PackedStream(tok, docs(10, 7), cfg)
    a.next_batch(3)
    b = PackedStream(tok, docs(10, 7), cfg)
    b.load_state(a.state())
    for _ in range(40):  # crosses epochs
        assert torch.equal(a.next_batch(3), b.next_batch(3))
    assert a.epoch >= 1
    fim = tok.fim_middle_id
    rows = PackedStream(tok, docs(10, 7), cfg).next_batch(20)
    assert rows.shape == (20, 17) and (rows == fim).any() and (rows == tok.file_sep_id).any()


def test_override_parsing() -> None:
    cfg = parse_overrides(["--lr=1e-3", "--seq-len=256", "--test_eval=true", "--model=base"])
    assert (cfg.lr, cfg.seq_len, cfg.test_eval, cfg.model) == (1e-3, 256, True, "base")
    assert parse_overrides([]) == TrainConfig()
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


def test_lr_schedule() -> None:
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    timed = replace(cfg, max_minutes=1.0, max_steps=10**6)
    assert lr_at(20, timed, train_seconds=60.0) == pytest.approx(0.1)


def test_sample_documents_covers_every_repo() -> None:
    ds = docs(30, 8)
    picked = sample_documents(ds, 2000, seed=0)
    assert sum(len(d.text.encode()) for d in picked) <= 2000
    assert {d.repo for d in picked} == {"crate0", "crate1", "crate2"}
    assert picked == sample_documents(ds, 2000, seed=0)
    assert sample_documents(ds, 0, seed=0) == ds
