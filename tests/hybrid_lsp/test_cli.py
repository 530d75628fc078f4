"""The `hybrid-lsp` command line, run for real (`python -m hybrid_lsp`) in a subprocess.

Checked: `complete` answers on both backends with exactly one JSON object on stdout; the
text output names a demo model; every unusable input (model missing, corrupt or not a
model; source file missing; position out of range; malformed FILE:LINE:COL) gives one
line on stderr naming the file and exit status 2; `bench kernels` dispatches.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from engine.gguf_io import save_gguf
from engine.parity import llama_cpp_or_skip, random_model, tiny_args, tiny_tokenizer
from hybrid_lsp import cli

ROOT = Path(__file__).resolve().parents[2]
# The checkout first on the path, whatever else the caller's PYTHONPATH holds.
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
SOURCE = "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\nfn main() {\n    let é = add(1, 2);\n}\n"
JSON_KEYS = {"text", "latency_ms", "backend", "model", "truncated", "demo", "tokens",
             "prompt_tokens"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    tok = tiny_tokenizer(d)
    args = tiny_args(tok.vocab_size, context_length=2048)
    sd = random_model(args, seed=3, std=0.1, emb_std=1.0).state_dict()
    plain = save_gguf(d / "tiny.gguf", args, sd, tok)
    demo = save_gguf(d / "tiny-demo.gguf", args, sd, tok, demo=True, name="tiny-demo")
    corrupt = d / "corrupt.gguf"
    corrupt.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    notamodel = d / "notes.gguf"
    notamodel.write_text("this is not a model\n")
    return {"plain": plain, "demo": demo, "corrupt": corrupt, "notamodel": notamodel}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("src") / "main.rs"
    p.write_text(SOURCE, encoding="utf-8")
    return p


def hybrid_lsp(*argv: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hybrid_lsp", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env=SUBPROCESS_ENV)


def one_json_object(stdout: str) -> dict:
    obj, end = json.JSONDecoder().raw_decode(stdout)
    assert stdout[end:].strip() == "", f"more than one JSON value on stdout: {stdout!r}"
    assert isinstance(obj, dict)
    return obj


def one_error_line(proc: subprocess.CompletedProcess, name: str) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert name in lines[0]
    return lines[0]


@pytest.mark.parametrize("backend", [
    pytest.param("llama", marks=pytest.mark.llama), "torch",
])
def test_complete_json_is_one_object(backend, models, source):
    if backend == "llama":
        llama_cpp_or_skip()
    proc = hybrid_lsp("complete", f"{source}:6:13", "--model", models["plain"], "--backend",
                      backend, "--max-tokens", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = one_json_object(proc.stdout)
    assert JSON_KEYS <= out.keys()
    assert out["backend"] == backend and out["model"] == str(models["plain"])
    assert out["demo"] is False and isinstance(out["truncated"], bool)
    assert 0 <= out["tokens"] <= 5 and out["prompt_tokens"] > 10 and out["latency_ms"] > 0
    assert isinstance(out["text"], str)


@pytest.mark.llama
def test_complete_text_says_demo(models, source):
    llama_cpp_or_skip()
    proc = hybrid_lsp("complete", f"{source}:2:5", "--model", models["demo"], "--backend",
                      "llama", "--max-tokens", "3")
    assert proc.returncode == 0, proc.stderr
    footer = proc.stdout.rstrip("\n").splitlines()[-1]
    assert "demo model" in footer and "backend llama" in footer and " ms" in footer


@pytest.mark.parametrize("which", ["corrupt", "notamodel", "missing"])
def test_unusable_model_exits_2_with_one_line(which, models, source, tmp_path):
    model = models.get(which, tmp_path / "missing.gguf")
    proc = hybrid_lsp("complete", f"{source}:1:1", "--model", model, "--backend", "llama")
    one_error_line(proc, str(model))
    assert proc.stdout == ""
    proc = hybrid_lsp("complete", f"{source}:1:1", "--model", model, "--json")
    one_error_line(proc, str(model))
    assert str(model) in one_json_object(proc.stdout)["error"]


@pytest.mark.parametrize(("pos", "message"), [
    ("missing.rs:1:1", "no such file"),
    ("{src}:9:1", "line 9 is out of range"),
    ("{src}:6:24", "column 24 is out of range"),
])
def test_bad_file_or_position_exits_2(pos, message, models, source):
    spec = pos.format(src=source)
    proc = hybrid_lsp("complete", spec, "--model", models["plain"])
    line = one_error_line(proc, spec.rsplit(":", 2)[0])
    assert message in line


def test_malformed_position_is_a_usage_error(models):
    proc = hybrid_lsp("complete", "main.rs:x:1", "--model", models["plain"])
    assert proc.returncode == 2 and "FILE:LINE:COL" in proc.stderr


def test_parse_position():
    assert cli.parse_position("C:/x/a.rs:3:7") == (Path("C:/x/a.rs"), 3, 7)
    for bad in ("a.rs", "a.rs:1", ":1:1", "a.rs:0:1", "a.rs:1:b"):
        with pytest.raises(ValueError):
            cli.parse_position(bad)


def test_default_model_is_the_packaged_model():
    path = cli.default_model_path()
    assert path == ROOT / "engine" / "models" / "hybrid-lsp.gguf" and path.is_file()
    from engine.gguf_io import read_model_info

    info = read_model_info(path)
    assert not info.demo and info.name == "hybrid-lsp" and info.args.vocab_size == 16384


def test_bench_kernels_dispatches(monkeypatch):
    seen = []
    fake = types.ModuleType("kernels.bench")
    fake.main = lambda rest: seen.append(rest) or 3
    monkeypatch.setitem(sys.modules, "kernels.bench", fake)
    assert cli.main(["bench", "kernels", "--shape", "small", "-n", "2"]) == 3
    assert seen == [["--shape", "small", "-n", "2"]]


def test_console_script_points_at_main():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["hybrid-lsp"] == "hybrid_lsp.cli:main"
    exe = shutil.which("hybrid-lsp", path=str(Path(sys.executable).parent))
    if exe:  # installed (pip install -e .): the script runs the same main
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "hybrid-lsp" in proc.stdout


@pytest.mark.llama
def test_complete_shows_the_post_processed_text_and_raw_on_request(source):
    """The default model through the CLI: `text` is what the server would show (parses
    where the model's raw text was inserted, no new tree-sitter errors), `raw` what the
    model wrote; `--raw` prints the latter."""
    llama_cpp_or_skip()
    from hybrid_lsp.postprocess import error_count

    where = f"{source}:6:13"
    proc = hybrid_lsp("complete", where, "--backend", "llama", "--max-tokens", "24", "--json")
    assert proc.returncode == 0, proc.stderr
    out = one_json_object(proc.stdout)
    text = Path(source).read_text()
    lines = text.split("\n")
    offset = sum(len(x) + 1 for x in lines[:5]) + 12
    if out["text"]:
        assert out["text"] == out["text"].rstrip() and "<|" not in out["text"]
        assert error_count(text[:offset] + out["text"] + text[offset:]) <= error_count(text)
    raw = hybrid_lsp("complete", where, "--backend", "llama", "--max-tokens", "24", "--raw")
    assert raw.returncode == 0, raw.stderr
    # Greedy decoding: the unrestricted generation starts like the restricted one.
    assert raw.stdout.startswith(out["raw"].split("\n")[0])
