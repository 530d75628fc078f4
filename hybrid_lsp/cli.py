"""The `hybrid-lsp` command line: argparse subcommands that only wire calls into the packages.

Conventions for every command: results go to stdout, logs and progress to stderr; with
`--json` stdout carries exactly one JSON object (errors included). While a command runs,
file descriptor 1 points at stderr, so nothing native (llama.cpp) can write to stdout.
Exit status: 0 done, 2 bad input (file, position or model file), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.resources
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hybrid_lsp import __version__
from hybrid_lsp.settings import CompletionSettings

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
#: `complete --budget` default: the server's default context budget (sized for the CPU).
CPU_BUDGET = CompletionSettings().context_budget_tokens
DEMO_NOTE = "demo model: a tiny model for trying hybrid-lsp out, not for real completions"


def default_model_path() -> Path:
    """The embedded default model (engine/models/hybrid-lsp.gguf, package data)."""
    from engine.default_model import default_model_path as path

    return path()


def parse_position(spec: str) -> tuple[Path, int, int]:
    """Split `FILE:LINE:COL` (FILE may itself contain ':'); ValueError if malformed."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"expected FILE:LINE:COL, got {spec!r}")
    try:
        line, col = int(parts[1]), int(parts[2])
    except ValueError:
        raise ValueError(f"expected numbers for LINE and COL in {spec!r}") from None
    if line < 1 or col < 1:
        raise ValueError(f"LINE and COL are 1-based, got {line}:{col}")
    return Path(parts[0]), line, col


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point fd 1 at stderr for the duration (native code cannot pollute stdout)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def emit_json(obj: dict[str, Any]) -> None:
    """Write one JSON object and a newline to stdout."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def fail(args: argparse.Namespace, message: str, code: int) -> int:
    """Report an error: one line on stderr, and the JSON object when --json was given."""
    message = " ".join(message.split())
    print(f"hybrid-lsp: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        emit_json({"error": message, "exit_code": code})
    return code


# -- complete ----------------------------------------------------------------------------

def _position(text: str) -> tuple[Path, int, int]:
    try:
        return parse_position(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return n


def _budget(text: str) -> int:
    n = _positive(text)
    if n < 1024:
        raise argparse.ArgumentTypeError(f"expected a budget of at least 1024 tokens, got {n}")
    return n


def cmd_complete(args: argparse.Namespace) -> int:
    """`hybrid-lsp complete FILE:LINE:COL`: one completion, post-processed as the server
    does (the syntactic unit at the cursor, balanced, nothing repeated from after the
    cursor); `--raw` prints the model's text as generated."""
    from engine.complete import (
        CompletionInputError,
        ModelError,
        complete_file,
        cursor_offset,
        read_source,
    )

    model = args.model if args.model is not None else default_model_path()
    limit = args.deadline_ms / 1e3 if args.deadline_ms else None
    make_request = None
    if not args.no_context:
        from hybrid_lsp.workspace_prompt import workspace_request_builder

        make_request = workspace_request_builder(Path(args.file), budget=args.budget)
    try:
        source = read_source(args.file)
        offset = cursor_offset(source, args.line, args.col, path=args.file)
        stops: list[str] = []
        max_tokens = args.max_tokens
        if not args.raw:
            from hybrid_lsp.postprocess import generation_limits

            stops, max_tokens = generation_limits(source, offset, args.max_tokens)
        with stdout_to_stderr():
            result = complete_file(args.file, args.line, args.col, model_path=model,
                                   backend=args.backend, max_tokens=max_tokens,
                                   time_limit_s=limit, make_request=make_request,
                                   stop_strings=stops)
    except (CompletionInputError, ModelError) as e:
        return fail(args, str(e), EXIT_BAD_INPUT)
    except Exception as e:  # a bug: the traceback goes to stderr, stdout stays one object
        log.exception("complete failed")
        return fail(args, f"internal error: {type(e).__name__}: {e}", EXIT_FAILURE)
    shown = result.text
    if not args.raw:
        from engine.prompt import special_token_strings
        from hybrid_lsp.postprocess import clean_completion, cut_at_markers

        raw = cut_at_markers(result.text, tuple(special_token_strings().values()))
        shown = clean_completion(raw, source, offset) or ""
    if args.json:
        emit_json({
            "text": shown, "raw": result.text, "latency_ms": round(result.latency_ms, 3),
            "backend": result.backend, "model": result.model, "truncated": result.truncated,
            "demo": result.demo, "tokens": result.tokens, "prompt_tokens": result.prompt_tokens,
            "evaluated_prompt_tokens": result.evaluated_prompt_tokens,
            "stop_reason": result.stop_reason, "load_ms": round(result.load_ms, 3),
            "model_name": result.model_name, "file": str(args.file), "line": args.line,
            "col": args.col, "context_budget": None if args.no_context else args.budget,
        })
        return EXIT_OK
    out = sys.stdout
    if not shown and not args.raw:
        out.write("(no completion: the model's text did not fit here; --raw shows it)\n")
    else:
        out.write(shown if shown.endswith("\n") else shown + "\n")
    note = f" [{DEMO_NOTE}]" if result.demo else ""
    cut = f", truncated ({result.stop_reason})" if result.truncated else ""
    out.write(f"-- {result.tokens} tokens in {result.latency_ms:.0f} ms{cut}; backend "
              f"{result.backend}, model {Path(result.model).name}{note}\n")
    out.flush()
    return EXIT_OK


# -- bench -------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    """`hybrid-lsp bench kernels ...`: hand the remaining arguments to the suite's main."""
    module, func = BENCH_SUITES[args.suite]
    try:
        suite_main = getattr(importlib.import_module(module), func)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return fail(args, f"the {args.suite} benchmark ({module}) is not installed", EXIT_FAILURE)
    return int(suite_main(list(args.rest)) or 0)


#: `hybrid-lsp bench SUITE ...` -> (module, function taking the remaining argv).
BENCH_SUITES = {
    "kernels": ("kernels.bench", "main"),
    "index": ("hybrid_lsp.bench_index_cmd", "main"),
    "serve": ("hybrid_lsp.bench_serve", "bench_serve"),
    "parity": ("engine.parity", "bench_parity"),
    "train": ("engine.bench_train", "bench_train"),
    "completions": ("hybrid_lsp.bench_completions", "bench_completions"),
}


# -- parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybrid-lsp",
                                     description="hybrid-lsp: an offline Rust coding assistant")
    parser.add_argument("--version", action="version", version=f"hybrid-lsp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("complete", help="complete a Rust file at FILE:LINE:COL")
    p.add_argument("position", metavar="FILE:LINE:COL", type=_position,
                   help="1-based line and column; the column counts characters, as rustc does")
    p.add_argument("--model", type=Path, default=None,
                   help="GGUF model file (default: the embedded engine/models/hybrid-lsp.gguf)")
    p.add_argument("--backend", choices=("auto", "torch", "llama"), default="auto",
                   help="auto: torch with a CUDA GPU, llama.cpp otherwise")
    p.add_argument("--max-tokens", type=_positive, default=64, help="tokens to generate at most")
    p.add_argument("--deadline-ms", type=_positive, default=None,
                   help="stop generating after this long and return what is there")
    p.add_argument("--budget", type=_budget, default=CPU_BUDGET,
                   help=f"context budget in tokens (>= 1024; default {CPU_BUDGET}, the "
                        "server's default, sized for the CPU)")
    p.add_argument("--no-context", action="store_true",
                   help="prompt with the file alone, without workspace context")
    p.add_argument("--raw", action="store_true",
                   help="print the model's text as generated, without the server's "
                        "post-processing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_complete)

    from hybrid_lsp import context_cmd, index_cmd, serve_cmd

    serve_cmd.add_parser(sub)
    index_cmd.add_parser(sub)
    context_cmd.add_parser(sub)

    p = sub.add_parser("bench", help="benchmarks: " + ", ".join(BENCH_SUITES))
    p.add_argument("suite", choices=tuple(BENCH_SUITES))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the suite")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command == "complete":
        args.file, args.line, args.col = args.position
    return args.func(args)
