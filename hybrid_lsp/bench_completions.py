"""Completion quality on held-out crates, through the server's own pipeline.

    hybrid-lsp bench completions [--model M] [--corpus .cache/corpus] [--positions 50]
                                 [--budget 2048] [--backend llama] [--samples 10] [--json]
                                 [--no-peer] [--no-write]

Samples `--positions` cursor positions in the test crates of the training corpus (seeded;
round-robin over crates, then a random file, then a random line inside a function body
with at least 6 characters of code; the cursor goes somewhere inside the line and the rest
of the line is deleted, as if the user were typing it). For each, the prompt is built as
the server builds it (the indexer's context assembler over the crate, `--budget` tokens,
then FIM), the engine generates with the server's stop strings and token limit, and the
server's post-processing (`clean_completion`) decides what is shown. Reports the share of
positions that show a non-empty completion leaving the file with no more tree-sitter
errors than before (checked again here), exact and prefix matches of the deleted rest of
the line, and engine latency; `--samples` prints that many unedited examples. The peer,
measured in the same run on the same positions: the prompt with the current file alone (no
workspace context), as a plain FIM completer would send it. The figures, with the CPU name,
replace this benchmark's section of docs/BENCHMARKS.md unless `--no-write`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: Function bodies: the lines strictly inside them are candidate cursor lines.
_MIN_CODE_CHARS = 6


@dataclass(frozen=True)
class Position:
    """A cursor in a test-crate file whose line's rest was deleted."""

    crate: str          # "<crate>/<version>"
    path: str           # file path inside the crate
    line: int           # 0-based
    col: int            # characters into the line
    text: str           # the file with the rest of the line deleted
    expected: str       # the deleted rest of the line

    @property
    def offset(self) -> int:
        lines = self.text.split("\n")
        return sum(len(x) + 1 for x in lines[:self.line]) + self.col


@dataclass
class Outcome:
    """What the pipeline showed at one position."""

    crate: str
    path: str
    line: int
    col: int
    line_prefix: str
    expected: str
    raw: str
    shown: str | None
    errors_before: int
    errors_after: int
    prompt_tokens: int
    generated_tokens: int
    engine_ms: float

    @property
    def ok(self) -> bool:
        """Shown, non-empty, and no new tree-sitter errors."""
        return bool(self.shown and self.shown.strip()) and self.errors_after <= self.errors_before

    @property
    def exact(self) -> bool:
        return self.ok and self.shown.split("\n", 1)[0].strip() == self.expected.strip()

    @property
    def prefix(self) -> bool:
        """The shown first line is a non-empty prefix of the deleted rest of the line."""
        first = (self.shown or "").split("\n", 1)[0].rstrip()
        return self.ok and bool(first.strip()) and self.expected.startswith(first)


def body_lines(text: str) -> list[int]:
    """0-based lines strictly inside function bodies with enough code to complete."""
    from hybrid_lsp.postprocess import rust_parser

    tree = rust_parser().parse(text.encode("utf-8"))
    lines = text.split("\n")
    out: set[int] = set()
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_item":
            body = node.child_by_field_name("body")
            if body is not None:
                for i in range(body.start_point[0] + 1, body.end_point[0]):
                    code = lines[i].strip()
                    if len(code) >= _MIN_CODE_CHARS and not code.startswith(("//", "/*", "*")):
                        out.add(i)
        stack.extend(node.children)
    return sorted(out)


def sample_positions(files: dict[str, dict[str, str]], n: int, seed: int) -> list[Position]:
    """`n` positions from `files` (crate -> path -> text), round-robin over crates."""
    rng = random.Random(seed)
    crates = sorted(files)
    rng.shuffle(crates)
    candidates: dict[str, list[tuple[str, list[int]]]] = {}
    for crate in crates:
        per_file = [(p, body_lines(t)) for p, t in sorted(files[crate].items())]
        candidates[crate] = [(p, ls) for p, ls in per_file if ls]
    crates = [c for c in crates if candidates[c]]
    out: list[Position] = []
    seen: set[tuple[str, str, int]] = set()
    i = 0
    while len(out) < n and crates:
        crate = crates[i % len(crates)]
        i += 1
        path, lines = rng.choice(candidates[crate])
        line = rng.choice(lines)
        if (crate, path, line) in seen:
            if i > 50 * n:
                break
            continue
        seen.add((crate, path, line))
        text = files[crate][path]
        rows = text.split("\n")
        row = rows[line]
        indent = len(row) - len(row.lstrip())
        code_end = len(row.rstrip())
        col = rng.randint(indent + 1, code_end - 1)
        rows[line] = row[:col]
        out.append(Position(crate, path, line, col, "\n".join(rows), row[col:].rstrip()))
    return out


def load_test_crates(corpus: Path) -> dict[str, dict[str, str]]:
    """The test split of `engine.data.corpus`: crate version -> path -> text."""
    from engine.train import load_split

    files: dict[str, dict[str, str]] = {}
    for doc in load_split(corpus, "test"):
        files.setdefault(doc.repo, {})[doc.path] = doc.text
    return files


def position_request(pos: Position, files: dict[str, str], tok, budget: int,
                     context: bool = True):
    """The FimRequest the server would send at `pos` (the indexer's context over the crate,
    `budget` tokens); without `context`, the current file alone (the peer)."""
    from engine.data.documents import Repo
    from engine.prompt import ContextFile, FimRequest
    from hybrid_lsp.train_data import RepoContext

    name, _, version = pos.crate.partition("/")
    if not context:
        return FimRequest(pos.path, pos.text[:pos.offset], pos.text[pos.offset:], name)
    repo_files = tuple((p, pos.text if p == pos.path else t) for p, t in sorted(files.items()))
    ctx = RepoContext(tok, Repo(name, version, repo_files)).assembler.assemble(
        pos.path, pos.text, pos.line, pos.col, budget=budget)
    return FimRequest(ctx.path, ctx.prefix, ctx.suffix, ctx.repo_name,
                      tuple(ContextFile(p, t) for p, t in ctx.context_files()))


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_COUNTED = frozenset(
    "as async await break const continue crate dyn else enum extern false fn for if impl in "
    "let loop match mod move mut pub ref return self Self static struct super trait true type "
    "unsafe use where while Some None Ok Err Box Vec String Option Result".split())


def new_identifiers(pos: Position) -> list[str]:
    """Identifiers (3+ characters, not keywords or prelude names) of the deleted rest of the
    line that appear nowhere in the rest of the file: what the file alone cannot tell."""
    seen = set(_IDENT.findall(pos.text))
    out: list[str] = []
    for name in _IDENT.findall(pos.expected):
        if len(name) >= 3 and name not in _NOT_COUNTED and name not in seen \
                and name not in out:
            out.append(name)
    return out


def context_coverage(pos: Position, req) -> tuple[int, int]:
    """(identifiers new to the file, how many of them the served request's repository
    context holds); `req` is `position_request(pos, ...)`."""
    names = new_identifiers(pos)
    held: set[str] = set()
    for cf in req.context:
        held.update(_IDENT.findall(cf.text))
    return len(names), sum(n in held for n in names)


def score_position(pos: Position, files: dict[str, str], model, tok, budget: int,
                   context: bool = True, req=None) -> tuple[float, int]:
    """(bits, bytes) of the deleted rest of the line under the served prompt (healed, as
    served: the healed text is scored too) by a torch model: how much the prompt tells the
    model about the text the user wanted, with no sampling noise."""
    import math

    import torch

    from engine.complete import served_prompt
    from engine.train import token_nats

    req = req or position_request(pos, files, tok, budget, context)
    ids, healed = served_prompt(tok, req, budget)
    text = healed + pos.expected
    target = tok.encode(text)
    row = torch.tensor([ids + target], dtype=torch.int64)
    with torch.no_grad():
        nats = token_nats(model, row)[0, len(ids) - 1:]
    return float(nats.sum()) / math.log(2), len(text.encode("utf-8"))


def run_position(pos: Position, files: dict[str, str], engine, tok, budget: int,
                 max_tokens: int, context: bool = True) -> Outcome:
    """The server's pipeline at one position: context, prompt, generation, post-processing.
    Without `context`, the prompt holds the current file alone (the peer)."""
    from engine.backends import GenerationRequest
    from engine.complete import served_prompt
    from engine.prompt import special_token_strings, unheal_completion
    from hybrid_lsp.postprocess import (
        clean_completion,
        cut_at_markers,
        error_count,
        generation_limits,
    )

    offset = pos.offset
    req = position_request(pos, files, tok, budget, context)
    stops, limit = generation_limits(pos.text, offset, max_tokens)
    ids, healed = served_prompt(tok, req, min(budget, engine.n_ctx - limit - 1))
    t0 = time.perf_counter()
    gen = engine.generate(GenerationRequest(tokens=ids, max_tokens=limit,
                                            stop_strings=tuple(stops), text_prefix=healed))
    ms = (time.perf_counter() - t0) * 1e3
    raw = unheal_completion(cut_at_markers(gen.text, tuple(special_token_strings().values())),
                            healed)
    shown = clean_completion(raw, pos.text, offset)
    before = error_count(pos.text)
    after = error_count(pos.text[:offset] + (shown or "") + pos.text[offset:])
    line_prefix = pos.text.split("\n")[pos.line]
    return Outcome(pos.crate, pos.path, pos.line, pos.col, line_prefix, pos.expected, raw,
                   shown, before, after, len(ids), len(gen.tokens), ms)


def summarize(outcomes: Sequence[Outcome]) -> dict:
    """Shares and latencies over all positions."""
    n = len(outcomes)
    ms = [o.engine_ms for o in outcomes]
    return {
        "positions": n,
        "shown_ok": sum(o.ok for o in outcomes),
        "shown_ok_share": sum(o.ok for o in outcomes) / n if n else 0.0,
        "exact_line": sum(o.exact for o in outcomes),
        "prefix_of_line": sum(o.prefix for o in outcomes),
        "engine_ms_p50": statistics.median(ms) if ms else 0.0,
        "engine_ms_p95": sorted(ms)[min(n - 1, int(0.95 * n))] if ms else 0.0,
        "prompt_tokens_mean": statistics.mean(o.prompt_tokens for o in outcomes) if n else 0,
        "crates": len({o.crate for o in outcomes}),
    }


def sample_markdown(outcomes: Sequence[Outcome], k: int) -> str:
    """The first `k` outcomes as unedited examples (what the model wrote, what was shown)."""
    parts = []
    for o in outcomes[:k]:
        shown = "(nothing shown)" if not o.shown else o.shown
        parts.append(
            f"- `{o.crate}` {o.path}:{o.line + 1}:{o.col + 1}\n"
            f"  - line so far: `{o.line_prefix.strip()}`\n"
            f"  - deleted rest: `{o.expected}`\n"
            f"  - model (raw): `{o.raw.split(chr(10), 1)[0]}`"
            f"{' ...' if chr(10) in o.raw.strip() else ''}\n"
            f"  - shown: `{shown.split(chr(10), 1)[0]}`{' ...' if chr(10) in shown else ''}"
            f"{'  (exact)' if o.exact else ''}")
    return "\n".join(parts)


SECTION = "## Completions on held-out crates (`hybrid-lsp bench completions`)"


def section_text(served: dict, peer: dict | None, samples_md: str) -> str:
    """The docs/BENCHMARKS.md section for a run (served pipeline and file-only peer)."""
    rows = [("shown, non-empty, no new tree-sitter errors (target >= 80% served)",
             "shown_ok", True), ("exact rest of the line", "exact_line", True),
            ("shown first line a prefix of the rest of the line", "prefix_of_line", True)]
    n = served["positions"]
    head = "| | served (indexer context) |" + (" file only (peer) | served / peer |"
                                                if peer else "")
    lines = [SECTION, "", f"`hybrid-lsp bench completions` (seed {served['seed']}): "
             f"{n} cursor positions in {served['crates']} test crates (a random line inside a "
             "function body, the cursor inside it, the rest of the line deleted), model "
             f"`{Path(served['model']).name}` on {served['backend']}, the server's pipeline "
             f"(context budget {served['budget']} tokens, token healing, stop strings, "
             "`clean_completion`); the peer prompts with the current file alone. CPU: "
             f"{served['cpu']}, load average {served['load_average'][0]:.2f} at the start, "
             f"{served['load_average'][1]:.2f} at the end.", "", head,
             "|---|---|" + ("---|---|" if peer else "")]
    for label, key, _ in rows:
        row = f"| {label} | {served[key]} / {n} ({served[key] / n:.0%}) |"
        if peer:
            ratio = f"{served[key] / peer[key]:.2f}x" if peer[key] else "-"
            row += f" {peer[key]} / {n} ({peer[key] / n:.0%}) | {ratio} |"
        lines.append(row)
    row = (f"| engine time p50 / p95 | {served['engine_ms_p50']:.0f} / "
           f"{served['engine_ms_p95']:.0f} ms ({served['prompt_tokens_mean']:.0f} prompt "
           "tokens) |")
    if peer:
        row += (f" {peer['engine_ms_p50']:.0f} / {peer['engine_ms_p95']:.0f} ms "
                f"({peer['prompt_tokens_mean']:.0f} prompt tokens) | |")
    lines.append(row)
    if samples_md:
        lines += ["", "Unedited samples (served):", "", samples_md]
    return "\n".join(lines) + "\n"


def bench_completions(argv: Sequence[str] | None = None) -> int:
    """`hybrid-lsp bench completions ...` (see the module docstring)."""
    from hybrid_lsp.cli import default_model_path

    ap = argparse.ArgumentParser(prog="hybrid-lsp bench completions", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--corpus", type=Path, default=Path(".cache/corpus"))
    ap.add_argument("--positions", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=2048, help="context budget in tokens")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--backend", choices=("auto", "torch", "llama"), default="llama")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--json", action="store_true", help="one JSON object with every outcome")
    ap.add_argument("--no-peer", action="store_true",
                    help="skip the file-only peer (same positions, prompt without context)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs"
                    / "BENCHMARKS.md", help="where the section goes")
    ap.add_argument("--no-write", action="store_true", help="do not update --out")
    ap.add_argument("--score", action="store_true",
                    help="also score the deleted rest of the line (bits/byte) under the served "
                         "and the file-only prompt with the same weights in torch on the CPU")
    ap.add_argument("--score-only", action="store_true",
                    help="--score without generating (nothing is written to --out)")
    a = ap.parse_args(argv)
    if a.score_only:
        a.score, a.no_write = True, True
    model = a.model or default_model_path()
    try:
        files = load_test_crates(a.corpus)
    except OSError as e:
        print(f"error: no test split under {a.corpus} ({e}); build the corpus first "
              "(python -m engine.data.corpus all)", file=sys.stderr)
        return 2
    from engine.backends import select_backend
    from engine.gguf_io import read_model_info

    info = read_model_info(model)
    positions = sample_positions(files, a.positions, a.seed)
    scores = score_positions(model, positions, files, info.tokenizer, a.budget) \
        if a.score else None
    if a.score_only:
        print(scores_text(scores, a.budget, a.seed))
        if a.json:
            print(json.dumps(scores))
        return 0
    engine = select_backend(a.backend, model, info=info,
                            n_ctx=max(4096, a.budget + a.max_tokens + 64))
    from hybrid_lsp.bench_serve import cpu_name, write_section

    outcomes: list[Outcome] = []
    peer_outcomes: list[Outcome] = []
    load_start = os.getloadavg()[0]
    try:
        for i, pos in enumerate(positions, 1):
            outcomes.append(run_position(pos, files[pos.crate], engine, info.tokenizer,
                                         a.budget, a.max_tokens))
            if not a.no_peer:
                peer_outcomes.append(run_position(pos, files[pos.crate], engine,
                                                  info.tokenizer, a.budget, a.max_tokens,
                                                  context=False))
            print(f"\r{i}/{len(positions)} positions", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
    finally:
        engine.close()
    summary = summarize(outcomes)
    summary.update(model=str(model), model_name=info.name, backend=engine.name,
                   budget=a.budget, seed=a.seed, cpu=cpu_name(),
                   load_average=[round(load_start, 2), round(os.getloadavg()[0], 2)])
    peer = summarize(peer_outcomes) if peer_outcomes else None
    if not a.no_write:
        write_section(a.out, section_text(summary, peer, sample_markdown(outcomes, a.samples)),
                      SECTION)
    if a.json:
        print(json.dumps({**summary, "peer": peer, "outcomes": [
            {**asdict(o), "ok": o.ok, "exact": o.exact, "prefix": o.prefix}
            for o in outcomes]}))
        return 0
    n = summary["positions"]
    print(f"model {info.name} ({Path(model).name}), backend {engine.name}, context budget "
          f"{a.budget}, {n} positions in {summary['crates']} test crates (seed {a.seed})")
    print(f"shown, non-empty, no new tree-sitter errors: {summary['shown_ok']}/{n} "
          f"({summary['shown_ok_share']:.0%})")
    print(f"exact rest of line: {summary['exact_line']}/{n}; shown first line is a prefix of "
          f"it: {summary['prefix_of_line']}/{n}")
    print(f"engine latency p50 {summary['engine_ms_p50']:.0f} ms, p95 "
          f"{summary['engine_ms_p95']:.0f} ms; prompt {summary['prompt_tokens_mean']:.0f} "
          "tokens on average")
    if peer:
        print(f"peer, the file alone: shown {peer['shown_ok']}/{n}, exact {peer['exact_line']}, "
              f"prefix {peer['prefix_of_line']}; served/peer shown "
              f"{summary['shown_ok'] / max(1, peer['shown_ok']):.2f}x, exact "
              f"{summary['exact_line'] / max(1, peer['exact_line']):.2f}x")
    if scores:
        print(scores_text(scores, a.budget, a.seed))
    if a.samples:
        print("\n" + sample_markdown(outcomes, a.samples))
    return 0


def score_positions(model_path: Path, positions: Sequence[Position],
                    files: dict[str, dict[str, str]], tok, budget: int) -> dict:
    """Bits/byte of the deleted rests of the lines under the served and the file-only
    prompts (`score_position`, one torch model on the CPU), summed over `positions`, and in
    how many positions the served prompt gave the lower bits."""
    import torch

    from engine.gguf_io import load_gguf
    from engine.model import Transformer

    loaded = load_gguf(model_path)
    model = Transformer(loaded.info.args)
    model.load_state_dict(loaded.state_dict)
    model.eval()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    reqs = [position_request(p, files[p.crate], tok, budget) for p in positions]
    served = [score_position(p, files[p.crate], model, tok, budget, req=r)
              for p, r in zip(positions, reqs, strict=True)]
    peer = [score_position(p, files[p.crate], model, tok, budget, context=False)
            for p in positions]
    nbytes = sum(b for _, b in served)
    cover = [context_coverage(p, r) for p, r in zip(positions, reqs, strict=True)]
    # The positions where the context holds a name the file does not: there it can help.
    helped = [i for i, (_, held) in enumerate(cover) if held]

    def bpb(rows: list[tuple[float, int]], idx: list[int]) -> float:
        return sum(rows[i][0] for i in idx) / max(1, sum(rows[i][1] for i in idx))

    return {
        "positions": len(positions), "bytes": nbytes,
        "new_name_positions": sum(n > 0 for n, _ in cover),
        "new_names": sum(n for n, _ in cover), "new_names_in_context": sum(h for _, h in cover),
        "context_holds_positions": len(helped),
        "context_holds_served_bpb": bpb(served, helped),
        "context_holds_peer_bpb": bpb(peer, helped),
        "served_bits_per_byte": sum(x for x, _ in served) / max(1, nbytes),
        "peer_bits_per_byte": sum(x for x, _ in peer) / max(1, sum(b for _, b in peer)),
        "served_lower": sum(s[0] < p[0] - 1e-9 for s, p in zip(served, peer, strict=True)),
        "peer_lower": sum(p[0] < s[0] - 1e-9 for s, p in zip(served, peer, strict=True)),
        "served_bits": [round(x, 3) for x, _ in served],
        "peer_bits": [round(x, 3) for x, _ in peer],
    }


def scores_text(scores: dict, budget: int, seed: int) -> str:
    """One paragraph of `score_positions` figures."""
    s, p = scores["served_bits_per_byte"], scores["peer_bits_per_byte"]
    return (f"bits/byte of the deleted rest of the line ({scores['positions']} positions, "
            f"{scores['bytes']} bytes, seed {seed}, budget {budget}): served {s:.3f}, file "
            f"only {p:.3f} (served/peer {s / p if p else float('nan'):.3f}); served lower at "
            f"{scores['served_lower']} positions, file only lower at {scores['peer_lower']}. "
            f"Names of the deleted text new to the file: {scores['new_names']} at "
            f"{scores['new_name_positions']} positions, {scores['new_names_in_context']} of them "
            f"in the served context; at the {scores['context_holds_positions']} positions where "
            f"the context holds one: served {scores['context_holds_served_bpb']:.3f}, file only "
            f"{scores['context_holds_peer_bpb']:.3f}")
