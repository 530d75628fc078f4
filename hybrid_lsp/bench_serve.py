"""`hybrid-lsp bench serve`: warm completion latency of the real server, typing simulation.

Starts `hybrid-lsp serve` as a subprocess over stdio on a copy of a fixture crate (the
server tests' `tests/hybrid_lsp/fixtures/ws` unless `--workspace`), with a model (the embedded
model unless `--model`) on a backend (llama unless `--backend`). Once the engine is ready
and the file is open (the server warms the engine's cache), it types snippets into
functions of `src/lib.rs` one character at a time, as an editor does: each keystroke is an
incremental `didChange` followed by a `textDocument/completion` at the cursor, and the
next keystroke waits for the answer. The first `--warmup` requests are not counted.

Latency is measured at the client, request to response, so it includes the server's
debounce (the setting's default unless `--debounce-ms`), prompt assembly, the engine
child and post-processing. Answers served from the completion cache are counted
apart (and included in "all"). A request "shows a completion" when its answer has an item
(a non-empty completion survived post-processing). The figures (p50/p95, counts, share
shown, CPU name and load average) go to stderr, to stdout as JSON with `--json`, and into
`docs/BENCHMARKS.md` under "## Server" (only that section is replaced) unless `--no-write`.

`--trace FILE` turns on the server's `log.includeText` setting and writes one JSON line
per request: the line up to the cursor, the model's raw text, the text shown (or null),
the engine's stop reason and the latency.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hybrid_lsp.server import TRACE_PREFIX
from hybrid_lsp.transport import FrameReader

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "hybrid_lsp" / "fixtures" / "ws"
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"
SECTION = "## Server"
#: (line after which a new line is typed, text typed there): inside three functions.
SNIPPETS = (
    ("    let mut total = 0.0;", "let count = items.len() as f64;"),
    ("pub fn label(s: &Shape) -> &'static str {", "let fallback = \"unknown\";"),
    ("pub fn unit() -> Circle {", "let radius = 1.0_f64.max(0.5);"),
)


class Rpc:
    """A minimal JSON-RPC client over a subprocess's pipes (answers server requests)."""

    def __init__(self, argv: list[str], env: dict[str, str], stderr_path: Path) -> None:
        self._err = stderr_path.open("ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env, cwd=ROOT)
        self._answers: dict[Any, dict] = {}
        self._cond = threading.Condition()
        self._next = 0
        threading.Thread(target=self._read, name="bench-reader", daemon=True).start()

    def _read(self) -> None:
        reader = FrameReader(self.proc.stdout)
        while (frame := reader.read()) is not None:
            if frame.body is None:
                continue
            msg = json.loads(frame.body)
            if "method" in msg and "id" in msg:  # a server -> client request
                result = [None] if msg["method"] == "workspace/configuration" else None
                self._write({"jsonrpc": "2.0", "id": msg["id"], "result": result})
            elif "method" not in msg:
                with self._cond:
                    self._answers[msg.get("id")] = msg
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _write(self, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def notify(self, method: str, params: Any) -> None:
        self._write({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params: Any, timeout: float = 120.0) -> Any:
        """Send a request and wait for its result (RuntimeError on an error answer)."""
        self._next += 1
        rid = self._next
        self._write({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        end = time.monotonic() + timeout
        with self._cond:
            while rid not in self._answers:
                left = end - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"{method}: no answer (server exit {self.proc.poll()})")
                self._cond.wait(min(left, 1.0))
            msg = self._answers.pop(rid)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg.get("result")

    def close(self) -> None:
        try:
            self.request("shutdown", None, timeout=20)
            self.notify("exit", None)
            self.proc.wait(10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self._err.close()


def cpu_name() -> str:
    """The CPU model name and the number of cores this process may use."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {len(os.sched_getaffinity(0))} cores"


def percentile(data: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of `data` (q in 0..1)."""
    s = sorted(data)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def _status(rpc: Rpc) -> dict[str, Any]:
    return rpc.request("workspace/executeCommand", {"command": "hybridLsp.status"})


def _position(text: str, offset: int) -> dict[str, int]:
    line = text.count("\n", 0, offset)
    col = offset - (text.rfind("\n", 0, offset) + 1)
    return {"line": line, "character": len(text[offset - col:offset].encode("utf-16-le")) // 2}


def run_bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Run the typing simulation; the figures as a dict."""
    ws = tmp / "ws"
    shutil.copytree(args.workspace, ws)
    env = dict(os.environ, HYBRID_LSP_CACHE_DIR=str(tmp / "cache"),
               HYBRID_LSP_LOG_DIR=str(tmp / "logs"), PYTHONPATH=str(ROOT))
    rpc = Rpc([sys.executable, "-m", "hybrid_lsp.serve_cmd", "--log-level", "warning"], env,
              tmp / "server.stderr")
    try:
        completion: dict[str, Any] = {"maxTokens": args.max_tokens}
        if args.debounce_ms is not None:
            completion["debounceMs"] = args.debounce_ms
        options: dict[str, Any] = {"model": {"path": str(args.model), "backend": args.backend},
                                   "completion": completion}
        if args.trace is not None:
            options["log"] = {"level": "info", "includeText": True}
        rpc.request("initialize", {
            "processId": os.getpid(), "rootUri": ws.as_uri(), "capabilities": {},
            "initializationOptions": options})
        rpc.notify("initialized", {})
        end = time.monotonic() + args.ready_timeout
        while (st := _status(rpc))["engineState"] != "ready":
            if time.monotonic() > end or st["engineState"] == "failed":
                raise RuntimeError(f"engine not ready: {st['engineState']} {st['engineDetail']}")
            time.sleep(0.2)
        path = ws / "src" / "lib.rs"
        text = path.read_text(encoding="utf-8")
        uri = path.as_uri()
        rpc.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": "rust", "version": 1, "text": text}})
        time.sleep(args.settle_s)  # the server warms the engine's cache for the file
        version, samples = 1, []
        records: list[dict[str, Any]] = []
        load_start = os.getloadavg()[0]
        rounds = 0
        while len(samples) < args.requests + args.warmup and rounds < 20:
            rounds += 1
            for anchor, snippet in SNIPPETS:
                at = text.index(anchor) + len(anchor)
                insert = "\n    "
                pos = _position(text, at)
                version += 1
                rpc.notify("textDocument/didChange", {
                    "textDocument": {"uri": uri, "version": version},
                    "contentChanges": [{"range": {"start": pos, "end": pos}, "text": insert}]})
                text = text[:at] + insert + text[at:]
                cursor = at + len(insert)
                for ch in snippet:
                    pos = _position(text, cursor)
                    version += 1
                    rpc.notify("textDocument/didChange", {
                        "textDocument": {"uri": uri, "version": version},
                        "contentChanges": [{"range": {"start": pos, "end": pos}, "text": ch}]})
                    text, cursor = text[:cursor] + ch + text[cursor:], cursor + 1
                    t0 = time.perf_counter()
                    res = rpc.request("textDocument/completion", {
                        "textDocument": {"uri": uri}, "position": _position(text, cursor)})
                    ms = (time.perf_counter() - t0) * 1e3
                    items = (res or {}).get("items", [])
                    detail = items[0].get("detail", "") if items else ""
                    samples.append((ms, "cache" in detail, bool(items)))
                    records.append({
                        "offset": cursor, "line": text[text.rfind("\n", 0, cursor) + 1:cursor],
                        "item": items[0]["textEdit"]["newText"] if items else None,
                        "cache": "cache" in detail, "ms": round(ms, 1)})
                    if args.think_ms:
                        time.sleep(args.think_ms / 1e3)
                    if len(samples) >= args.requests + args.warmup:
                        break
                if len(samples) >= args.requests + args.warmup:
                    break
        st = _status(rpc)
    finally:
        rpc.close()
    if args.trace is not None:
        write_trace(args.trace, records[args.warmup:], tmp / "server.stderr")
    counted = samples[args.warmup:]
    generated = [ms for ms, cached, _ in counted if not cached]
    cached = [ms for ms, hit, _ in counted if hit]
    every = [ms for ms, _, _ in counted]
    return {
        "cpu": cpu_name(), "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "model": st.get("model"), "backend": st.get("backend"),
        "device": st.get("device"), "requests": len(counted), "warmup": args.warmup,
        "with_items": sum(1 for *_, has in counted if has),
        "shown_share": round(sum(1 for *_, has in counted if has) / max(1, len(counted)), 3),
        "all_p50_ms": round(percentile(every, 0.5), 1),
        "all_p95_ms": round(percentile(every, 0.95), 1),
        "generated": len(generated),
        "generated_p50_ms": round(percentile(generated, 0.5), 1) if generated else None,
        "generated_p95_ms": round(percentile(generated, 0.95), 1) if generated else None,
        "cache_hits": len(cached),
        "debounce_ms": st["settings"]["completion"]["debounceMs"],
        "max_tokens": st["settings"]["completion"]["maxTokens"],
        "context_budget_tokens": st["settings"]["completion"]["contextBudgetTokens"],
        "engine_restarts": st.get("engineRestarts"),
        "mean_generated_tokens": round(
            st.get("engineCounters", {}).get("real_generated_tokens", 0)
            / max(1, st.get("engineCounters", {}).get("real_done", 0)), 1),
    }


def write_trace(path: Path, records: list[dict[str, Any]], server_log: Path) -> None:
    """One JSON line per request: what the bench saw, joined in order (by cursor offset)
    with the server's trace lines (raw model text, text shown, stop reason)."""
    traces: list[dict[str, Any]] = []
    with contextlib.suppress(OSError):
        for line in server_log.read_text(encoding="utf-8", errors="replace").splitlines():
            if TRACE_PREFIX in line:
                with contextlib.suppress(ValueError):
                    traces.append(json.loads(line.split(TRACE_PREFIX, 1)[1]))
    k = 0
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            while (not rec["cache"] and k < len(traces)
                   and traces[k]["offset"] != rec["offset"]):
                k += 1  # a warm-up request's trace
            if not rec["cache"] and k < len(traces):
                rec = {**rec, **{key: traces[k][key] for key in ("raw", "shown", "stop",
                                                                 "tokens", "engine_ms")}}
                k += 1
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def section(fig: dict[str, Any]) -> str:
    """The "## Server" section of docs/BENCHMARKS.md for `fig`."""
    gen = (f"{fig['generated_p50_ms']} / {fig['generated_p95_ms']}" if fig["generated"]
           else "n/a")
    c = fig
    rows = [
        ("CPU", f"{c['cpu']} (load average {c['load_average'][0]} at the start, "
                f"{c['load_average'][1]} at the end)"),
        ("model / backend / device", f"{c['model']} / {c['backend']} / {c['device']}"),
        ("settings", f"debounce {c['debounce_ms']} ms, max {c['max_tokens']} tokens, "
                     f"context budget {c['context_budget_tokens']} tokens"),
        ("requests counted", f"{c['requests']} ({c['generated']} through the engine, "
                             f"{c['cache_hits']} from the completion cache)"),
        ("requests that show a completion", f"{c['with_items']} of {c['requests']} "
                                            f"({100 * c['shown_share']:.0f}%)"),
        ("p50 / p95, all requests", f"{c['all_p50_ms']} / {c['all_p95_ms']} ms"),
        ("p50 / p95, through the engine (no cache hit)", f"{gen} ms"),
        ("tokens generated per engine request (mean)", str(c["mean_generated_tokens"])),
        ("engine restarts during the run", str(c["engine_restarts"])),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return f"""{SECTION}

Warm completion latency of the real server (`hybrid-lsp bench serve`): `hybrid-lsp serve`
over stdio on the server tests' fixture crate, typing simulation (each keystroke an
incremental `didChange`, then `textDocument/completion` at the cursor; the next keystroke
waits for the answer), measured at the client from request to response, first
{c['warmup']} requests not counted. A request shows a completion when its answer has an
item, i.e. non-empty text survived post-processing (`--trace FILE` writes each request's
raw model text and the text shown).

| | |
|---|---|
{table}
"""


def write_section(path: Path, text: str, section: str = SECTION) -> None:
    """Replace (or append) the `section` heading's section of `path` ("## Server" by
    default), leaving the rest alone."""
    old = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.rstrip() == section), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        new = "".join(lines[:start]) + text + ("\n" + "".join(lines[end:]) if end < len(lines)
                                                else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new, encoding="utf-8")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hybrid-lsp bench serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "engine" / "models" / "hybrid-lsp.gguf")
    p.add_argument("--backend", default="llama", choices=("auto", "torch", "llama"))
    p.add_argument("--workspace", type=Path, default=FIXTURE)
    p.add_argument("--requests", type=int, default=40, help="requests counted (>= 30)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--debounce-ms", type=int, default=None,
                   help="server debounce (default: the setting's default)")
    p.add_argument("--think-ms", type=float, default=0.0, help="pause after each answer")
    p.add_argument("--settle-s", type=float, default=2.0,
                   help="wait after opening the file (cache warming)")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=BENCHMARKS)
    p.add_argument("--no-write", action="store_true", help="do not touch the benchmarks file")
    p.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    p.add_argument("--trace", type=Path, default=None,
                   help="write each request's raw and shown completion here (JSON lines)")
    return p.parse_args(list(argv))


def bench_serve(argv: Sequence[str]) -> int:
    """Entry point of `hybrid-lsp bench serve ARGS`; the exit status."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if not args.model.is_file():
        log.error("hybrid-lsp bench serve: no model file %s", args.model)
        return 2
    if args.requests < 1:
        log.error("hybrid-lsp bench serve: --requests must be positive")
        return 2
    with tempfile.TemporaryDirectory(prefix="hybrid-lsp-bench-") as tmp:
        try:
            fig = run_bench(args, Path(tmp))
        except (RuntimeError, OSError) as e:
            log.error("hybrid-lsp bench serve: %s", e)
            return 1
    log.info("server completion latency on %s (%s): p50 %.1f ms, p95 %.1f ms over %d "
             "requests (generated: p50 %s, p95 %s ms; %d cache hits)", fig["cpu"],
             fig["backend"], fig["all_p50_ms"], fig["all_p95_ms"], fig["requests"],
             fig["generated_p50_ms"], fig["generated_p95_ms"], fig["cache_hits"])
    if not args.no_write:
        write_section(args.out, section(fig))
        log.info("wrote the %r section of %s", SECTION, args.out)
    if args.json:
        sys.stdout.write(json.dumps(fig) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(bench_serve(sys.argv[1:]))
