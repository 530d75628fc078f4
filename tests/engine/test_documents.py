"""Repository-level documents and the tokenization stage on a small fake corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from engine.data import corpus
from engine.data.documents import (
    Repo,
    crate_document,
    dependency_order,
    eval_document,
    ordered_repo,
)
from engine.data.tokenize import TokenizeConfig, tokenize_corpus
from engine.tokenizer import Tokenizer, train_tokenizer
from hybrid_lsp.train_data import RepoContext

FILES = {
    "src/lib.rs": "pub mod shapes;\nmod util;\nuse crate::shapes::Circle;\n"
                  "pub fn area(c: &Circle) -> f64 { util::square(c.r) * 3.14 }\n",
    "src/shapes.rs": "use crate::util::square;\n/// A circle.\npub struct Circle { pub r: f64 }\n"
                     "impl Circle {\n    pub fn area(&self) -> f64 {\n        square(self.r)\n"
                     "    }\n}\n",
    "src/util.rs": "/// Squares a number.\npub fn square(x: f64) -> f64 {\n    x * x\n}\n",
    "tests/it.rs": "use shapes_crate::area;\n#[test]\nfn t() {\n    let c = 1;\n}\n",
}


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    d = tmp_path_factory.mktemp("rs")
    for i, text in enumerate(FILES.values()):
        (d / f"f{i}.rs").write_text(text * 3)
    return train_tokenizer(d, 400)


def test_dependency_order_puts_used_modules_first() -> None:
    files = sorted(FILES.items())
    order = [files[i][0] for i in dependency_order(files)]
    assert order.index("src/util.rs") < order.index("src/shapes.rs") < order.index("src/lib.rs")
    assert sorted(order) == sorted(FILES)
    # A cycle still yields every file once.
    cyc = [("src/a.rs", "use crate::b::X;\n"), ("src/b.rs", "use crate::a::Y;\n")]
    assert sorted(dependency_order(cyc)) == [0, 1]


def test_crate_document_format_and_fim_share(tok: Tokenizer) -> None:
    repo = ordered_repo("shapes", "1.0.0", list(FILES.items()))
    plain = crate_document(tok, repo, random.Random(0), fim_rate=0.0)
    assert plain == eval_document(tok, repo)
    text = tok.decode(plain)
    assert text.startswith("<|repo_name|>shapes\n<|file_sep|>src/util.rs\n/// Squares")
    assert text.endswith("<|endoftext|>") and text.count("<|file_sep|>") == 4
    n_fim = n_files = 0
    for seed in range(40):
        ids = crate_document(tok, repo, random.Random(seed), fim_rate=0.5, spm_rate=0.5)
        n_fim += ids.count(tok.fim_middle_id)
        n_files += ids.count(tok.file_sep_id)
        # Every FIM example ends its document; the next one restates the repository.
        assert ids.count(tok.eot_id) == ids.count(tok.repo_name_id)
    assert n_files == 160 and 50 < n_fim < 110


def test_served_context_example_matches_the_prompt_format(tok: Tokenizer) -> None:
    repo = ordered_repo("shapes", "1.0.0", list(FILES.items()))
    ctx = RepoContext(tok, repo)
    rng = random.Random(3)
    seen_context = False
    for _ in range(10):
        ids = ctx.example(rng, 512)
        assert ids[0] == tok.repo_name_id and ids[-1] == tok.eot_id
        assert ids.count(tok.fim_middle_id) == 1
        assert ids.count(tok.fim_prefix_id) == 1 and ids.count(tok.fim_suffix_id) == 1
        seen_context |= ids.count(tok.file_sep_id) > 1
        assert len(ids) <= 512 + 64  # the budget, plus the middle
    assert seen_context


def _fake_corpus(root: Path) -> None:
    recs = []
    for crate, split in (("shapes", "train"), ("geo", "train"), ("held", "test"),
                         ("check", "val")):
        for rel, text in FILES.items():
            path = f"{crate}/1.0.0/{rel}"
            (root / "filtered/files" / path).parent.mkdir(parents=True, exist_ok=True)
            data = (text + f"// {crate}\n").encode()
            (root / "filtered/files" / path).write_bytes(data)
            recs.append(corpus.FileRecord(crate, "1.0.0", path, len(data), "x", split))
    (root / "filtered/manifest.jsonl").write_text(
        "".join(json.dumps(r.__dict__) + "\n" for r in recs))


@pytest.mark.parametrize("workers", [1, 2])
def test_tokenize_stage(tmp_path: Path, tok: Tokenizer, workers: int) -> None:
    _fake_corpus(tmp_path)
    tok_path = tmp_path / "tok.json"
    tok.save(tok_path)
    cfg = TokenizeConfig(epochs=2, context_share=0.3, budget_min=128, budget_max=256)
    meta = tokenize_corpus(tmp_path, tok_path, tmp_path / "tokens", cfg, workers=workers,
                           context_factory=RepoContext)
    train = np.fromfile(tmp_path / "tokens/train.bin", dtype=meta["dtype"])
    assert len(train) == meta["splits"]["train"]["tokens"] == sum(
        meta["splits"]["train"]["tokens_per_epoch"])
    assert meta["splits"]["train"]["context_examples"] > 0
    assert tok.decode(train[:1].tolist()) == "<|repo_name|>"
    docs = json.loads((tmp_path / "tokens/test.docs.json").read_text())
    assert [d["crate"] for d in docs] == ["held"]
    test = np.fromfile(tmp_path / "tokens/test.bin", dtype=meta["dtype"])
    repo = Repo("held", "1.0.0", ())
    assert tok.decode(test.tolist()).startswith(f"<|repo_name|>{repo.name}\n<|file_sep|>")
    # Same settings: the stage is a no-op; and the result does not depend on the workers.
    again = tokenize_corpus(tmp_path, tok_path, tmp_path / "tokens", cfg, workers=workers,
                           context_factory=RepoContext)
    assert again == meta
    if workers == 2:
        single = tokenize_corpus(tmp_path, tok_path, tmp_path / "one", cfg, workers=1,
                                 context_factory=RepoContext)
        one = np.fromfile(tmp_path / "one/train.bin", dtype=single["dtype"])
        assert np.array_equal(one, train)
