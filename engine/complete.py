"""Complete a Rust file at a cursor from the file alone: position -> FIM prompt -> backend.

Coordinates follow rustc's diagnostics: LINE and COL are 1-based, COL counts Unicode
characters (code points) of the line, a CRLF line ending is not part of the line, and a
leading BOM is not part of the text. COL may be one past the last character (end of line).

Workspace context (other files) comes with the indexer; here the prompt holds the current
file only, its path relative to the nearest directory with a Cargo.toml (the repository
name is that directory's name). A file too long for the context is cut around the cursor:
the end of the prefix and the start of the suffix are kept.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.backends import (
    Backend,
    BackendError,
    GenerationRequest,
    SamplingSettings,
    select_backend,
)
from engine.gguf_io import ModelInfo, read_model_info
from engine.prompt import (
    FimRequest,
    build_prompt,
    check_prompt_format,
    heal_prefix,
    unheal_completion,
)
from engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)

#: Share of a too-long prompt's budget given to the prefix (the rest goes to the suffix).
PREFIX_SHARE = 0.75


class CompletionInputError(ValueError):
    """The source file or the cursor position cannot be used; str() is one line."""


class ModelError(ValueError):
    """The model file cannot be used; str() is one line naming the file."""


@dataclass(frozen=True, kw_only=True)
class CompletionResult:
    """A completion and what produced it. Times are milliseconds."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    evaluated_prompt_tokens: int
    latency_ms: float  # prompt building + generation (excludes loading the model)
    load_ms: float     # reading the model and building the backend (0 if it was given)
    backend: str
    model: str         # the model file's path
    model_name: str
    demo: bool
    truncated: bool
    stop_reason: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


# -- the file and the cursor -------------------------------------------------------------

def read_source(path: str | Path) -> str:
    """The file's text without a leading BOM; CompletionInputError if it cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CompletionInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CompletionInputError(f"{path}: is a directory, not a source file") from None
    except OSError as e:
        raise CompletionInputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CompletionInputError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    return text.removeprefix("\ufeff")


def cursor_offset(text: str, line: int, col: int, *, path: str | Path = "<text>") -> int:
    """Index into `text` of the 1-based (line, col), col in characters as rustc counts them."""
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise CompletionInputError(f"{path}: line {line} is out of range (the file has "
                                   f"{len(lines)} lines)")
    content = lines[line - 1].removesuffix("\r")
    if not 1 <= col <= len(content) + 1:
        raise CompletionInputError(f"{path}:{line}: column {col} is out of range (the line has "
                                   f"{len(content)} characters, so 1..{len(content) + 1})")
    return sum(len(s) + 1 for s in lines[: line - 1]) + col - 1


def prompt_location(path: Path) -> tuple[str, str]:
    """(path shown in the prompt, repository name): relative to the nearest Cargo.toml dir."""
    path = path.resolve()
    for parent in path.parents:
        if (parent / "Cargo.toml").is_file():
            return path.relative_to(parent).as_posix(), parent.name
    return path.name, ""


def served_prompt(tok: Tokenizer, req: FimRequest, budget: int) -> tuple[list[int], str]:
    """(token ids, healed text) of a served request: `heal_prefix`, then `fit_prompt`. The
    generation takes the healed text as its `text_prefix` and `unheal_completion` takes it
    off the model's text."""
    prefix, healed = heal_prefix(tok, req.prefix)
    healed_req = FimRequest(req.path, prefix, req.suffix, req.repo_name, req.context)
    return fit_prompt(tok, healed_req, budget), healed


def fit_prompt(tok: Tokenizer, req: FimRequest, budget: int) -> list[int]:
    """`build_prompt(req)`, shrinking prefix (from the left) and suffix (from the right) to fit."""
    ids = build_prompt(tok, req)
    if len(ids) <= budget:
        return ids
    fixed = len(build_prompt(tok, FimRequest(req.path, "", "", req.repo_name, req.context)))
    if fixed >= budget:
        raise CompletionInputError(f"{req.path}: no room for the file in a {budget}-token prompt")
    prefix, suffix = req.prefix, req.suffix
    ratio = (len(prefix) + len(suffix)) / max(1, len(ids) - fixed)  # characters per token
    room = (budget - fixed) * ratio
    keep_pre = min(len(prefix), int(room * PREFIX_SHARE))
    keep_suf = min(len(suffix), int(room - keep_pre))
    while True:
        cut = FimRequest(req.path, prefix[len(prefix) - keep_pre:], suffix[:keep_suf],
                         req.repo_name, req.context)
        ids = build_prompt(tok, cut)
        if len(ids) <= budget:
            log.info("prompt cut to %d tokens (%d + %d characters around the cursor)",
                     len(ids), keep_pre, keep_suf)
            return ids
        keep_pre, keep_suf = int(keep_pre * 0.9), int(keep_suf * 0.9)


#: Builds the FIM request from (tokenizer, file text, cursor offset in characters).
RequestBuilder = Callable[[Tokenizer, str, int], FimRequest]


# -- the model ---------------------------------------------------------------------------

@contextlib.contextmanager
def model_errors(model_path: str | Path) -> Iterator[None]:
    """Turn any failure to load `model_path` into one ModelError line naming the file."""
    try:
        yield
    except ModelError:
        raise
    except (ValueError, OSError, KeyError, BackendError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        if str(model_path) not in msg:
            msg = f"{model_path}: {msg}"
        raise ModelError(msg) from e


def load_model_info(model_path: str | Path) -> ModelInfo:
    """Validate the file, read its metadata and check its prompt-format version."""
    with model_errors(model_path):
        info = read_model_info(model_path)
        check_prompt_format(info.prompt_format_version, str(model_path))
    return info


def complete_file(path: str | Path, line: int, col: int, *, model_path: str | Path,
                  backend: str | Backend = "auto", max_tokens: int = 64,
                  deadline: float | None = None, time_limit_s: float | None = None,
                  sampling: SamplingSettings | None = None,
                  backend_options: dict | None = None,
                  make_request: RequestBuilder | None = None,
                  stop_strings: Sequence[str] = ()) -> CompletionResult:
    """Complete `path` at 1-based (line, col) with the model file `model_path`.

    `backend` is a name (`auto`, `torch`, `llama`; built here) or a backend already
    serving `model_path`. `deadline` is absolute (`time.monotonic()`); `time_limit_s`
    counts from the end of loading, so it bounds prompt building and generation only.
    Raises CompletionInputError for a missing file or a position
    out of range (checked before the model is touched), ModelError for a model that
    cannot be used. `make_request(tokenizer, text, offset)` builds the FIM request with
    workspace context (the CLI wires the indexer in); without it the prompt holds the file
    alone. `stop_strings` end the generation (the text is cut before them).
    """
    path = Path(path)
    text = read_source(path)
    offset = cursor_offset(text, line, col, path=path)
    t0 = time.monotonic()
    if isinstance(backend, str):
        info = load_model_info(model_path)
        with model_errors(model_path):
            engine = select_backend(backend, model_path, info=info, **(backend_options or {}))
    else:
        engine, info = backend, backend.info
        with model_errors(model_path):
            check_prompt_format(info.prompt_format_version, str(model_path))
    t1 = time.monotonic()
    if time_limit_s is not None:
        limit = t1 + time_limit_s
        deadline = limit if deadline is None else min(deadline, limit)
    if make_request is not None:
        req = make_request(info.tokenizer, text, offset)
    else:
        shown, repo = prompt_location(path)
        req = FimRequest(path=shown, prefix=text[:offset], suffix=text[offset:], repo_name=repo)
    try:
        ids, healed = served_prompt(info.tokenizer, req, engine.n_ctx - max_tokens - 1)
        gen = engine.generate(GenerationRequest(
            tokens=ids, max_tokens=max_tokens, sampling=sampling or SamplingSettings(),
            deadline=deadline, text_prefix=healed, stop_strings=tuple(stop_strings)))
    finally:
        if isinstance(backend, str):
            engine.close()
    t2 = time.monotonic()
    return CompletionResult(
        text=unheal_completion(gen.text, healed), token_ids=gen.tokens,
        prompt_tokens=gen.prompt_tokens,
        evaluated_prompt_tokens=gen.evaluated_prompt_tokens, latency_ms=(t2 - t1) * 1e3,
        load_ms=(t1 - t0) * 1e3 if isinstance(backend, str) else 0.0, backend=engine.name,
        model=str(model_path), model_name=info.name, demo=info.demo, truncated=gen.truncated,
        stop_reason=gen.stop_reason, timings=gen.timings,
    )
