"""The server's side of the engine child process: start, talk, watch, restart.

The model runs in `python -m engine.worker` (engine/worker.py has the wire format and the
scheduling rules); this process never imports torch or llama.cpp. `EngineClient` owns
one child at a time:

- `start()` validates the model file here (pure Python), spawns the child, waits for
  `Ready` and runs a health check (a one-token generation must come back).
- `generate()` sends token ids and waits for the answer, its deadline plus a grace period
  at most. A cancel event (or cancelling the awaiting task) forwards `Cancel` to the child
  and returns at once; the child's late answer is dropped.
- A child that exits (abort, segfault, CUDA fault, killed) fails its in-flight requests
  with `EngineUnavailable` and is restarted after a backoff (0.5 s doubling to 30 s;
  reset once a child has lived 30 s or answered a generation). A child that misses a
  deadline by the grace period is considered hung: it is killed and restarted. A model
  that cannot load is not retried until the settings change (`configure`).
- Health check while idle: every `health_interval_s` with no generation in flight, a
  generation must come back within `health_timeout_s`; a child that stays silent (a
  native call that never returns) is killed and restarted. It re-sends the last prompt
  with `max_tokens=0` (all cached: nothing is evaluated, and the KV cache a warm request
  filled stays), or a one-token generation when there was none.
- `counters()` returns the child's instrumentation counters (engine/worker.py).

The client is driven from one asyncio event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from engine.worker import (
    MAX_FRAME,
    Cancel,
    Crash,
    Failed,
    Generate,
    Load,
    LoadFailed,
    Ping,
    Pong,
    Ready,
    Result,
    Shutdown,
    ToParent,
    Tune,
)

log = logging.getLogger(__name__)

#: Extra time past a request's deadline before the child is declared hung.
HUNG_GRACE_S = 5.0
LOAD_TIMEOUT_S = 120.0
BACKOFF_START_S, BACKOFF_MAX_S, STABLE_AFTER_S = 0.5, 30.0, 30.0
HEALTH_INTERVAL_S, HEALTH_TIMEOUT_S = 30.0, 10.0

STOPPED, STARTING, READY, BACKOFF, FAILED = "stopped", "starting", "ready", "backoff", "failed"


class EngineUnavailable(RuntimeError):
    """The engine cannot answer now (starting, crashed, restarting or failed to load)."""


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """What the child runs; a change means a new child."""

    model_path: str
    backend: str = "auto"
    n_ctx: int = 4096


class EngineClient:
    """One engine child process, restarted when it dies."""

    def __init__(self, config: EngineConfig, *, env: dict[str, str] | None = None,
                 on_state: Callable[[str, str], None] | None = None,
                 health_interval_s: float = HEALTH_INTERVAL_S,
                 health_timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        self.config = config
        self.health_interval_s, self.health_timeout_s = health_interval_s, health_timeout_s
        self.health_checks = 0
        self._health_task: asyncio.Task | None = None
        self._generating = 0
        self._last_active = time.monotonic()
        self._last_tokens: list[int] = []
        self.state = STOPPED
        self.detail = ""
        self.ready: Ready | None = None
        self.restarts = 0
        self._env = env
        self._on_state = on_state or (lambda state, detail: None)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(ToParent)
        self._started_at = 0.0
        self._failures = 0
        self._restart_task: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()
        self._closing = False
        self._ready_event = asyncio.Event()

    # -- life cycle ----------------------------------------------------------------------
    def _set_state(self, state: str, detail: str = "") -> None:
        self.state, self.detail = state, detail
        if state == READY:
            self._ready_event.set()
        else:
            self._ready_event.clear()
        log.info("engine %s%s", state, f": {detail}" if detail else "")
        self._on_state(state, detail)

    async def start(self) -> bool:
        """Start a child (if none runs) and wait until it is ready; False if it is not."""
        async with self._start_lock:
            if self.state == READY and self._proc is not None:
                return True
            self._closing = False
            self._set_state(STARTING)
            try:
                await self._spawn()
                await self._health_check()
            except _LoadError as e:
                await self._kill()
                self._set_state(FAILED, str(e))
                return False
            except (TimeoutError, EngineUnavailable, OSError) as e:
                await self._kill()
                self._schedule_restart(f"start failed: {e or type(e).__name__}")
                return False
            self._set_state(READY, f"{self.ready.backend} on {self.ready.device}")
            if self._health_task is None or self._health_task.done():
                self._health_task = asyncio.create_task(self._health_loop(),
                                                        name="engine-health")
            return True

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the engine to be ready."""
        if self.state == READY:
            return True
        if self.state in (FAILED, STOPPED):
            return False  # nothing will make it ready without new settings
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready_event.wait(), timeout)
        return self.state == READY

    async def _spawn(self) -> None:
        from engine.gguf_io import read_model_info

        path = self.config.model_path
        try:  # validate here before any native loader sees the file
            await asyncio.to_thread(read_model_info, path)
        except Exception as e:  # any unreadable model is a load error, reported once
            raise _LoadError(" ".join(str(e).split()) or type(e).__name__) from e
        env = dict(os.environ if self._env is None else self._env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=None, env=env, limit=MAX_FRAME)
        self._started_at = time.monotonic()
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[0] = ready
        self._reader = asyncio.create_task(self._read_loop(self._proc), name="engine-reader")
        await self._send(Load(model_path=path, backend=self.config.backend,
                              n_ctx=self.config.n_ctx))
        msg = await asyncio.wait_for(ready, LOAD_TIMEOUT_S)
        if isinstance(msg, LoadFailed):
            raise _LoadError(msg.message)
        self.ready = msg
        log.info("engine child %d: %s on %s, model %s, loaded in %.0f ms", msg.pid, msg.backend,
                 msg.device, msg.model_name, msg.load_ms)

    async def _health_check(self, timeout: float = 30.0, tokens: Sequence[int] = ()) -> None:
        """A generation must come back within `timeout` (TimeoutError if not): `tokens`
        with max_tokens=0 (a cache refresh), else a known one-token prompt."""
        gen = Generate(id=next(self._ids), tokens=list(tokens), max_tokens=0, budget_s=timeout) \
            if tokens else Generate(id=next(self._ids), tokens=[0], max_tokens=1,
                                    budget_s=timeout)
        res = await self._request(gen, timeout=timeout)
        if not isinstance(res, Result):
            raise EngineUnavailable(f"health check failed: {getattr(res, 'message', res)}")

    async def configure(self, config: EngineConfig) -> None:
        """Use `config` from now on; restarts the child if it changed (or had failed)."""
        if config == self.config and self.state not in (FAILED, STOPPED):
            return
        self.config = config
        self._failures = 0
        await self._kill()
        await self.start()

    async def close(self) -> None:
        """Stop the child for good."""
        self._closing = True
        for task in (self._restart_task, self._health_task):
            if task is not None:
                task.cancel()
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(Exception):
                await self._send(Shutdown())
                await asyncio.wait_for(self._proc.wait(), 2.0)
        await self._kill()
        self._set_state(STOPPED)

    async def _kill(self) -> None:
        self._last_tokens = []
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5.0)
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        self._fail_pending("engine stopped")

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(EngineUnavailable(why))

    # -- crash handling ------------------------------------------------------------------
    def _on_exit(self, proc: asyncio.subprocess.Process) -> None:
        if proc is not self._proc:
            return  # a child we already replaced
        code = proc.returncode
        self._proc = None
        self._fail_pending(f"engine exited with code {code}")
        if self._closing or self.state == FAILED:
            return
        log.warning("engine child exited with code %s; restarting", code)
        self._schedule_restart(f"exited with code {code}")

    def _schedule_restart(self, why: str) -> None:
        if self._closing or (self._restart_task and not self._restart_task.done()):
            return
        if time.monotonic() - self._started_at >= STABLE_AFTER_S:
            self._failures = 0
        delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** self._failures)
        self._failures += 1
        self.restarts += 1
        self._set_state(BACKOFF, f"{why}; restart in {delay:.1f} s")
        self._restart_task = asyncio.create_task(self._restart_after(delay))

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._restart_task = None
        await self.start()

    async def _health_loop(self) -> None:
        """While idle, check every `health_interval_s` that generations still come back."""
        while not self._closing:
            await asyncio.sleep(self.health_interval_s)
            idle = time.monotonic() - self._last_active >= self.health_interval_s
            if self.state != READY or self._generating or not idle:
                continue
            self.health_checks += 1
            try:
                await self._health_check(self.health_timeout_s, self._last_tokens)
            except TimeoutError:
                await self.kill_hung(f"health check: no answer in {self.health_timeout_s:g} s")
            except EngineUnavailable as e:
                log.warning("health check failed: %s", e)

    async def kill_hung(self, why: str) -> None:
        """Kill the child (it stopped answering) and restart it."""
        log.warning("engine child hung (%s); killing it", why)
        proc = self._proc
        await self._kill()
        if proc is not None:
            self._schedule_restart(why)

    # -- requests ------------------------------------------------------------------------
    async def _send(self, msg: msgspec.Struct) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            raise EngineUnavailable(f"engine is {self.state}")
        body = self._encoder.encode(msg)
        try:
            proc.stdin.write(struct.pack(">I", len(body)) + body)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise EngineUnavailable("engine pipe closed") from e

    async def _request(self, msg: Generate | Ping, timeout: float):
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[msg.id] = fut
        try:
            await self._send(msg)
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            self._pending.pop(msg.id, None)

    async def generate(self, tokens: Sequence[int], *, max_tokens: int, budget_s: float | None,
                       stop_strings: Sequence[str] = (), warm: bool = False,
                       cancel: asyncio.Event | None = None,
                       text_prefix: str = "") -> Result | None:
        """Run one generation; None when cancelled. Raises EngineUnavailable."""
        if self.state != READY:
            raise EngineUnavailable(f"engine is {self.state}" +
                                    (f" ({self.detail})" if self.detail else ""))
        req_id = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        timeout = (budget_s or 60.0) + HUNG_GRACE_S
        waiter = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        self._generating += 1
        try:
            await self._send(Generate(id=req_id, tokens=list(tokens), max_tokens=max_tokens,
                                      budget_s=budget_s, stop_strings=list(stop_strings),
                                      warm=warm, text_prefix=text_prefix))
            done, _ = await asyncio.wait({fut, waiter} - {None}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if fut in done:
                msg = fut.result()
                if isinstance(msg, Failed):
                    raise EngineUnavailable(f"engine failed: {msg.message}")
                if msg.stop_reason != "cancelled":
                    self._last_tokens = list(tokens)
                # A child that served a request works: its death is not a crash loop, so
                # the next restart waits the shortest backoff (R6: engine back in 10 s).
                self._failures = 0
                return msg
            if waiter is not None and waiter in done:
                await self._cancel(req_id)
                return None
            await self.kill_hung(f"no answer {timeout:.1f} s after request {req_id}")
            raise EngineUnavailable("engine hung and is restarting")
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel(req_id))
            raise
        finally:
            self._generating -= 1
            self._last_active = time.monotonic()
            self._pending.pop(req_id, None)
            if waiter is not None:
                waiter.cancel()

    async def _cancel(self, req_id: int) -> None:
        with contextlib.suppress(EngineUnavailable):
            await self._send(Cancel(id=req_id))

    async def ping(self, timeout: float = 2.0) -> float:
        """Round trip to the child in milliseconds; raises EngineUnavailable."""
        t0 = time.monotonic()
        try:
            await self._request(Ping(id=next(self._ids)), timeout)
        except TimeoutError:
            raise EngineUnavailable("no pong") from None
        return (time.monotonic() - t0) * 1e3

    async def counters(self, timeout: float = 2.0) -> dict[str, int]:
        """The child's instrumentation counters; raises EngineUnavailable."""
        try:
            pong = await self._request(Ping(id=next(self._ids)), timeout)
        except TimeoutError:
            raise EngineUnavailable("no pong") from None
        return dict(pong.counters)

    async def tune_for_test(self, warm_hold_s: float) -> None:
        """Make warm requests hold until preempted (honoured only with test hooks on)."""
        await self._send(Tune(warm_hold_s=warm_hold_s))

    async def crash_for_test(self, how: str = "abort") -> None:
        """Ask the child to crash (honoured only with HYBRID_LSP_TEST_HOOKS=1)."""
        await self._send(Crash(how=how))

    # -- reading -------------------------------------------------------------------------
    async def _read_loop(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                head = await proc.stdout.readexactly(4)
                (n,) = struct.unpack(">I", head)
                if n > MAX_FRAME:
                    raise ValueError(f"Expected a frame of at most {MAX_FRAME} bytes, got {n}")
                self._dispatch(self._decoder.decode(await proc.stdout.readexactly(n)))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        except (ValueError, msgspec.DecodeError):
            log.exception("bad frame from the engine child; killing it")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()
        self._on_exit(proc)

    def _dispatch(self, msg: msgspec.Struct) -> None:
        key = 0 if isinstance(msg, Ready | LoadFailed) else msg.id
        fut = self._pending.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)
        elif isinstance(msg, Result | Pong | Failed):
            log.debug("late answer %d dropped", key)


class _LoadError(Exception):
    """The model cannot be loaded: not retried until the settings change."""
