"""The engine child process: runs one backend and serves generation requests over pipes.

Started by the language server as `python -m engine.worker`; the server itself never
imports torch or llama.cpp, so a native crash (llama.cpp `GGML_ABORT`, a CUDA fault)
ends this process only, and the server restarts it.

Wire format (both directions): frames of a 4-byte big-endian length followed by one
msgpack message (`msgspec`, tagged structs below; never pickle). The first message from
the parent is `Load`; the child answers `Ready` or `LoadFailed`, then serves
`Generate` / `Cancel` / `Ping` until `Shutdown` or end of input.

Scheduling: one generation at a time, on one thread. A new real request preempts the one
running (its cancel event is set, it answers with what it has, `stop_reason`
"cancelled") and replaces any request still waiting, which answers "cancelled" without
running. A warming request (`warm=True`, normally `max_tokens=0`: fill the KV cache with
a prompt prefix, generate nothing) never preempts a real request and is preempted by any.
Every `Generate` gets exactly one `Result` or `Failed`.

Test hook: with `HYBRID_LSP_TEST_HOOKS=1` in the environment, `Crash(how)` makes the
process `abort()`, exit, or hang in a generation that ignores cancellation.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
import time
from typing import BinaryIO

import msgspec

log = logging.getLogger("engine.worker")

TEST_HOOKS_ENV = "HYBRID_LSP_TEST_HOOKS"
#: Largest frame either side accepts (a 256K-token prompt is about 1.3 MB of msgpack).
MAX_FRAME = 64 << 20
STOP_CANCELLED = "cancelled"


# -- messages, parent -> child -------------------------------------------------------------

class Load(msgspec.Struct, tag=True):
    model_path: str
    backend: str = "auto"
    n_ctx: int = 4096


class Generate(msgspec.Struct, tag=True):
    id: int
    tokens: list[int]
    max_tokens: int = 64
    budget_s: float | None = None    # deadline relative to receipt
    stop_strings: list[str] = []
    warm: bool = False


class Cancel(msgspec.Struct, tag=True):
    id: int


class Ping(msgspec.Struct, tag=True):
    id: int


class Crash(msgspec.Struct, tag=True):
    how: str = "abort"               # abort | exit | hang


class Shutdown(msgspec.Struct, tag=True):
    pass


# -- messages, child -> parent -------------------------------------------------------------

class Ready(msgspec.Struct, tag=True):
    backend: str
    device: str
    model_name: str
    n_ctx: int
    demo: bool
    load_ms: float
    pid: int


class LoadFailed(msgspec.Struct, tag=True):
    message: str


class Result(msgspec.Struct, tag=True):
    id: int
    text: str
    truncated: bool
    stop_reason: str
    prompt_tokens: int
    evaluated_prompt_tokens: int
    generated_tokens: int
    prefill_ms: float
    decode_ms: float
    total_ms: float
    warm: bool = False


class Failed(msgspec.Struct, tag=True):
    id: int
    message: str


class Pong(msgspec.Struct, tag=True):
    id: int


ToChild = Load | Generate | Cancel | Ping | Crash | Shutdown
ToParent = Ready | LoadFailed | Result | Failed | Pong


def encode_frame(encoder: msgspec.msgpack.Encoder, msg: msgspec.Struct) -> bytes:
    """Length-prefixed msgpack frame."""
    body = encoder.encode(msg)
    return struct.pack(">I", len(body)) + body


def read_frame(stream: BinaryIO) -> bytes | None:
    """One frame's body from a blocking stream; None at end of input."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    if n > MAX_FRAME:
        raise ValueError(f"Expected a frame of at most {MAX_FRAME} bytes, got {n}")
    body = stream.read(n)
    return body if len(body) == n else None


def cancelled_result(req: Generate) -> Result:
    """The answer to a request that never ran."""
    return Result(id=req.id, text="", truncated=True, stop_reason=STOP_CANCELLED,
                  prompt_tokens=len(req.tokens), evaluated_prompt_tokens=0, generated_tokens=0,
                  prefill_ms=0.0, decode_ms=0.0, total_ms=0.0, warm=req.warm)


class Worker:
    """The request loop of the child: a reader (main thread) and one generation thread."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._out_lock = threading.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        self._cond = threading.Condition()
        self._pending: Generate | None = None
        self._current: tuple[Generate, threading.Event] | None = None
        self._stopping = False
        self._backend = None
        self._hang = False

    def send(self, msg: msgspec.Struct) -> None:
        frame = encode_frame(self._encoder, msg)
        with self._out_lock:
            self._out.write(frame)
            self._out.flush()

    # -- loading -----------------------------------------------------------------------
    def load(self, msg: Load) -> bool:
        t0 = time.monotonic()
        try:
            from engine.backends import select_backend
            from engine.gguf_io import read_model_info

            info = read_model_info(msg.model_path)
            backend = select_backend(msg.backend, msg.model_path, info=info, n_ctx=msg.n_ctx)
        except Exception as e:  # any load failure is reported, then the process ends
            self.send(LoadFailed(message=" ".join(str(e).split()) or type(e).__name__))
            return False
        self._backend = backend
        device = str(getattr(backend, "device", "cpu"))
        self.send(Ready(backend=backend.name, device=device, model_name=info.name,
                        n_ctx=backend.n_ctx, demo=info.demo,
                        load_ms=(time.monotonic() - t0) * 1e3, pid=os.getpid()))
        return True

    # -- scheduling (reader thread) ----------------------------------------------------
    def submit(self, req: Generate) -> None:
        dropped: Generate | None = None
        with self._cond:
            busy_real = (self._current is not None and not self._current[0].warm) or (
                self._pending is not None and not self._pending.warm)
            if req.warm and busy_real:
                dropped = req
            else:
                dropped, self._pending = self._pending, req
                if self._current is not None:
                    self._current[1].set()
                self._cond.notify()
        if dropped is not None:
            self.send(cancelled_result(dropped))

    def cancel(self, req_id: int) -> None:
        dropped: Generate | None = None
        with self._cond:
            if self._current is not None and self._current[0].id == req_id:
                self._current[1].set()
            elif self._pending is not None and self._pending.id == req_id:
                dropped, self._pending = self._pending, None
        if dropped is not None:
            self.send(cancelled_result(dropped))

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            if self._current is not None:
                self._current[1].set()
            self._cond.notify()

    # -- generation thread -------------------------------------------------------------
    def run_generations(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                req, self._pending = self._pending, None
                event = threading.Event()
                self._current = (req, event)
            try:
                self.send(self._generate(req, event))
            except Exception as e:  # a failed request is answered; the worker goes on
                log.exception("generation %d failed", req.id)
                self.send(Failed(id=req.id, message=" ".join(str(e).split())[:500]))
            finally:
                with self._cond:
                    self._current = None

    def _generate(self, req: Generate, event: threading.Event) -> Result:
        from engine.backends import GenerationRequest

        while self._hang:  # test hook: a native call that never returns
            time.sleep(3600)
        deadline = None if req.budget_s is None else time.monotonic() + req.budget_s
        gen = self._backend.generate(GenerationRequest(
            tokens=req.tokens, max_tokens=req.max_tokens, deadline=deadline,
            stop_strings=tuple(req.stop_strings), cancel=event))
        t = gen.timings
        return Result(id=req.id, text=gen.text, truncated=gen.truncated,
                      stop_reason=gen.stop_reason, prompt_tokens=gen.prompt_tokens,
                      evaluated_prompt_tokens=gen.evaluated_prompt_tokens,
                      generated_tokens=len(gen.tokens), prefill_ms=t.get("prefill_s", 0) * 1e3,
                      decode_ms=t.get("decode_s", 0) * 1e3, total_ms=t.get("total_s", 0) * 1e3,
                      warm=req.warm)

    def crash(self, how: str) -> None:
        if os.environ.get(TEST_HOOKS_ENV) != "1":
            log.warning("ignoring Crash(%s): test hooks are off", how)
            return
        log.warning("test hook: %s", how)
        if how == "abort":
            os.abort()
        if how == "exit":
            os._exit(3)
        self._hang = True


def _private_stdout() -> BinaryIO:
    """Our frames go to a private copy of fd 1; fd 1 itself then points at stderr.

    Native code (llama.cpp, CUDA) that prints to stdout can then never corrupt the frames.
    """
    fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(fd, "wb", buffering=0)


def serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Serve the parent until Shutdown or end of input; the exit status."""
    worker = Worker(stdout)
    decoder = msgspec.msgpack.Decoder(ToChild)
    body = read_frame(stdin)
    if body is None:
        return 0
    first = decoder.decode(body)
    if not isinstance(first, Load):
        worker.send(LoadFailed(message=f"expected Load first, got {type(first).__name__}"))
        return 2
    if not worker.load(first):
        return 2
    thread = threading.Thread(target=worker.run_generations, name="generate", daemon=True)
    thread.start()
    while (body := read_frame(stdin)) is not None:
        msg = decoder.decode(body)
        if isinstance(msg, Generate):
            worker.submit(msg)
        elif isinstance(msg, Cancel):
            worker.cancel(msg.id)
        elif isinstance(msg, Ping):
            worker.send(Pong(id=msg.id))
        elif isinstance(msg, Crash):
            worker.crash(msg.how)
        elif isinstance(msg, Shutdown):
            break
    worker.stop()
    thread.join(timeout=2.0)
    return 0


def main() -> int:
    logging.basicConfig(level=os.environ.get("HYBRID_LSP_ENGINE_LOG", "WARNING").upper(),
                        stream=sys.stderr, format="engine[%(process)d] %(levelname)s %(message)s")
    out = _private_stdout()
    try:
        return serve(sys.stdin.buffer, out)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main())
