"""Hardening above pygls: framing, malformed messages, error replies, logging without popups.

pygls 2.1.1 sends nothing for an unparseable body or for params that fail to structure,
has no cap on Content-Length, drops requests after `shutdown` without a reply and turns
errors into `window/showMessage` popups (shared/docs/reliability-notes.md §2). Here:

- `FrameReader` reads `Content-Length` frames from a blocking byte stream on its own
  thread; a body larger than `MAX_BODY` is skipped (its first bytes are kept to find the
  request id), a header block without a length is skipped, and the reader resynchronises
  on the next header.
- `HardenedProtocol.handle_body` answers every request whose id can be read exactly once:
  -32700 (id null) for a body that is not JSON, -32600 for a message that is not a
  JSON-RPC request (or has an invalid id, or arrives after `shutdown`, or is too large),
  -32602 for params that fail to structure, -32002 before `initialize`; everything else
  goes to pygls, which answers (result, -32601, -32603, -32800).
- `LspLogHandler` forwards warnings to `window/logMessage`, at most `RATE` per second
  with a count of what was dropped; `report_server_error` logs instead of showing popups.
- `setup_logging` adds a size-capped log file under the platform log folder and keeps
  pygls' own INFO logs (which contain message bodies, i.e. code) out of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from lsprotocol import types
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger(__name__)

#: Largest message body accepted (a 10 MB source file in didOpen is about 11 MB of JSON).
MAX_BODY = 64 << 20
MAX_HEADER_LINE = 8192
#: Bytes of an oversized body kept to find its id.
SNIFF_BYTES = 4096
INT32 = (-(2**31), 2**31 - 1)

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND = -32700, -32600, -32601
INVALID_PARAMS, INTERNAL_ERROR, SERVER_NOT_INITIALIZED = -32602, -32603, -32002

_ID_SNIFF = re.compile(rb'"id"\s*:\s*(-?\d{1,10}|"(?:[^"\\]|\\.){0,200}")')


@dataclass(frozen=True)
class Frame:
    """One message body, or why there is none (`error`), with an id found by sniffing."""

    body: bytes | None
    error: str | None = None
    sniffed_id: int | str | None = None


class FrameReader:
    """Split a blocking byte stream into LSP frames; never raises on bad input."""

    def __init__(self, stream: BinaryIO, max_body: int = MAX_BODY) -> None:
        self._stream = stream
        self._max_body = max_body

    def read(self) -> Frame | None:
        """The next frame, or None at end of input."""
        length: int | None = None
        bad_header: str | None = None
        saw_header = False
        while True:
            line = self._stream.readline(MAX_HEADER_LINE)
            if not line:
                return None
            if line in (b"\r\n", b"\n"):
                if not saw_header:
                    continue  # stray blank line between frames
                break
            saw_header = True
            name, sep, value = line.partition(b":")
            if not sep:
                bad_header = bad_header or f"malformed header line {line[:40]!r}"
                continue
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                    if length < 0:
                        raise ValueError
                except ValueError:
                    bad_header = f"bad Content-Length {value.strip()[:40]!r}"
                    length = None
        if length is None:
            return Frame(None, bad_header or "missing Content-Length")
        if length > self._max_body:
            return self._skip(length)
        body = self._read_exactly(length)
        if body is None:
            return None
        return Frame(body)

    def _read_exactly(self, n: int) -> bytes | None:
        chunks, left = [], n
        while left:
            chunk = self._stream.read(min(left, 1 << 20))
            if not chunk:
                return None
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _skip(self, length: int) -> Frame:
        head = self._stream.read(min(length, SNIFF_BYTES)) or b""
        left = length - len(head)
        while left > 0:
            chunk = self._stream.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        return Frame(None, f"message of {length} bytes exceeds the {self._max_body}-byte cap",
                     sniff_id(head))


def sniff_id(head: bytes) -> int | str | None:
    """The request id written near the start of a (possibly truncated) JSON body."""
    m = _ID_SNIFF.search(head)
    if m is None:
        return None
    with contextlib.suppress(ValueError):
        value = json.loads(m.group(1))
        return value if valid_id(value) else None
    return None


def valid_id(value: Any) -> bool:
    """A JSON-RPC id LSP accepts: a string or an integer in the int32 range (not a bool)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return INT32[0] <= value <= INT32[1]
    return isinstance(value, str)


class HardenedProtocol(LanguageServerProtocol):
    """pygls' protocol with a reply for every request and guarded client responses."""

    def __init__(self, server, converter) -> None:
        super().__init__(server, converter)
        self.initialized = False
        self.shutdown_requested = False
        self.malformed = 0

    def send_error(self, msg_id: int | str | None, code: int, message: str) -> None:
        """Send an error response (`msg_id` None means JSON null)."""
        self._send_data({"jsonrpc": "2.0", "id": msg_id,
                         "error": {"code": code, "message": message}})

    def handle_frame(self, frame: Frame) -> None:
        """Dispatch one frame from `FrameReader`."""
        if frame.body is None:
            self.malformed += 1
            log.warning("skipped a message: %s", frame.error)
            if frame.sniffed_id is not None:
                self.send_error(frame.sniffed_id, INVALID_REQUEST, frame.error or "bad message")
            return
        self.handle_body(frame.body)

    def handle_body(self, body: bytes) -> None:
        """Parse, check and dispatch one message body (see the module docstring)."""
        try:
            raw = json.loads(body)
        except (ValueError, RecursionError) as e:
            self.malformed += 1
            log.warning("unparseable message (%s)", type(e).__name__)
            self.send_error(None, PARSE_ERROR, f"Parse error: {type(e).__name__}")
            return
        if not isinstance(raw, dict):
            self.malformed += 1
            self.send_error(None, INVALID_REQUEST, "Expected a JSON object")
            return
        if self._reject(raw):
            return
        try:
            message = self.structure_message(raw)
        except Exception as e:  # cattrs raises many kinds on bad params
            self._structure_failed(raw, e)
            return
        if isinstance(message, dict):  # no "jsonrpc" key: structure_message passes it through
            self._structure_failed(raw, ValueError("missing jsonrpc"))
            return
        method = getattr(message, "method", None)
        if method == types.INITIALIZE:
            self.initialized = True
        if method == types.EXIT and self.shutdown_requested:
            # The exit code says whether `shutdown` was *received* (LSP: 0 if so, else 1).
            # pygls sets its flag only once our async shutdown handler has finished, which a
            # pipelined `exit` can overtake (the storm test exited 1 under load).
            self._shutdown = True
        if method == types.EXIT and self._request_futures:
            # A client that pipelines `exit` still gets its pending answers first.
            asyncio.ensure_future(self._exit_when_answered(message))
            return
        try:
            self.handle_message(message)
        except Exception:  # pygls answers requests itself; this is a last resort log
            log.exception("failed to dispatch %s", raw.get("method"))

    async def _exit_when_answered(self, message: Any, timeout: float = 5.0) -> None:
        pending = [asyncio.wrap_future(f) if not asyncio.isfuture(f) else f
                   for f in list(self._request_futures.values())]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
            await asyncio.sleep(0)  # let the done-callbacks send their responses
        self.handle_message(message)

    def _reject(self, raw: dict) -> bool:
        """Answer (and drop) messages pygls would mishandle; True if answered or dropped."""
        has_id, method = "id" in raw, raw.get("method")
        if raw.get("jsonrpc") != "2.0" or (method is not None and not isinstance(method, str)):
            self.malformed += 1
            rid = raw.get("id") if has_id and valid_id(raw.get("id")) else None
            if has_id or method is None:
                self.send_error(rid, INVALID_REQUEST, "Expected a JSON-RPC 2.0 message")
            return True
        if not has_id or method is None:
            if not has_id and method is None:
                self.malformed += 1
                self.send_error(None, INVALID_REQUEST, "Expected a method or an id")
                return True
            return False  # a notification or a response
        if not valid_id(raw["id"]):
            self.malformed += 1
            self.send_error(None, INVALID_REQUEST, f"Invalid request id {raw['id']!r}")
            return True
        if (self._shutdown or self.shutdown_requested) and method != types.EXIT:
            self.send_error(raw["id"], INVALID_REQUEST, "Server is shutting down")
            return True
        if method == types.SHUTDOWN:
            self.shutdown_requested = True
        if not self.initialized and method != types.INITIALIZE:
            self.send_error(raw["id"], SERVER_NOT_INITIALIZED, "Server not initialized")
            return True
        return False

    def _structure_failed(self, raw: dict, exc: Exception) -> None:
        self.malformed += 1
        method = raw.get("method")
        log.warning("invalid params for %s (%s)", method, type(exc).__name__)
        if "id" in raw and isinstance(method, str):
            known = self.get_message_type(method) is not None or method in self.fm.features
            if known:
                self.send_error(raw["id"], INVALID_PARAMS, f"Invalid params for {method}")
            else:
                self.send_error(raw["id"], METHOD_NOT_FOUND, f"Unknown method {method}")

    def _execute_handler(self, msg_id, handler, callback, args=None, kwargs=None) -> None:
        """pygls 2.1.1 keeps the future of every notification handler and generator step
        (keyed by a fresh uuid) in `_request_futures` forever: about 1.7 KB per
        `didChange` (found by tests/reliability R3). Drop each one when it is done."""
        def done(future: Any) -> None:
            if self._request_futures.get(msg_id) is future:
                del self._request_futures[msg_id]
            callback(future)
        super()._execute_handler(msg_id, handler, done, args, kwargs)

    def _handle_response(self, msg_id, result=None, error=None) -> None:
        """pygls #621: a response to a request whose future was cancelled is dropped."""
        future = self._request_futures.get(msg_id)
        if future is not None and future.done():
            self._request_futures.pop(msg_id, None)
            return
        super()._handle_response(msg_id, result, error)


# -- running the loop -------------------------------------------------------------------

def _reader_thread(reader: FrameReader, loop: asyncio.AbstractEventLoop,
                   queue: asyncio.Queue) -> None:
    try:
        while True:
            frame = reader.read()
            loop.call_soon_threadsafe(queue.put_nowait, frame)
            if frame is None:
                return
    except Exception:  # a broken stream ends the session like EOF
        log.exception("transport reader failed")
        loop.call_soon_threadsafe(queue.put_nowait, None)


async def serve_frames(protocol: HardenedProtocol, stream: BinaryIO,
                       stop: threading.Event | None = None) -> None:
    """Read frames from `stream` on a thread and dispatch them until end of input."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    threading.Thread(target=_reader_thread, args=(FrameReader(stream), loop, queue),
                     name="lsp-reader", daemon=True).start()
    while stop is None or not stop.is_set():
        frame = await queue.get()
        if frame is None:
            return
        protocol.handle_frame(frame)


def private_stdout() -> BinaryIO:
    """A private copy of fd 1 for the LSP stream; fd 1 then points at stderr.

    Anything that prints to stdout afterwards (a stray print, native code) lands in the
    log instead of corrupting the protocol stream.
    """
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb", buffering=0)


# -- logging ----------------------------------------------------------------------------

class LspLogHandler(logging.Handler):
    """Forward records to `window/logMessage`, rate-limited (token bucket, `RATE`/s)."""

    RATE, BURST = 1.0, 5.0
    _LEVELS = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
               logging.INFO: types.MessageType.Info}

    def __init__(self, send: Callable[[types.LogMessageParams], None],
                 loop: asyncio.AbstractEventLoop, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self._send, self._loop = send, loop
        self._tokens, self._last = self.BURST, time.monotonic()
        self._dropped = 0
        self._local = threading.local()
        self._lock_rate = threading.Lock()

    def _allow(self) -> bool:
        with self._lock_rate:
            now = time.monotonic()
            self._tokens = min(self.BURST, self._tokens + (now - self._last) * self.RATE)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            self._dropped += 1
            return False

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False) or self._loop.is_closed() or not self._allow():
            return  # (a closed loop: the session is over; the file log still has it)
        self._local.busy = True
        try:
            text = self.format(record)
            if self._dropped:
                text += f" ({self._dropped} more log messages dropped)"
                self._dropped = 0
            kind = self._LEVELS.get(record.levelno, types.MessageType.Log)
            params = types.LogMessageParams(type=kind, message=text)
            self._loop.call_soon_threadsafe(self._send_safely, params)
        except RuntimeError:  # the loop closed meanwhile
            pass
        except Exception:
            self.handleError(record)
        finally:
            self._local.busy = False

    def _send_safely(self, params: types.LogMessageParams) -> None:
        self._local.busy = True
        try:
            self._send(params)
        except Exception:  # the transport may be gone at shutdown
            pass
        finally:
            self._local.busy = False


class RedactFilter(logging.Filter):
    """Drop the arguments of pygls' records (they hold message bodies, i.e. code)."""

    def __init__(self) -> None:
        super().__init__()
        self.include_text = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.include_text and record.name.startswith("pygls") and record.args:
            record.args = tuple("<redacted>" for _ in record.args) \
                if isinstance(record.args, tuple) else ()
            record.exc_info = record.exc_info if record.levelno >= logging.ERROR else None
        return True


REDACT = RedactFilter()


def log_file_path() -> Path:
    """`$HYBRID_LSP_LOG_DIR/server.log`, else the platform's user log folder."""
    folder = os.environ.get("HYBRID_LSP_LOG_DIR")
    if not folder:
        import platformdirs

        folder = platformdirs.user_log_dir("hybrid-lsp", appauthor=False)
    return Path(folder) / "server.log"


#: Size cap of the log file: `LOG_MAX_BYTES` per file, `LOG_BACKUPS` rotated copies kept.
LOG_MAX_BYTES, LOG_BACKUPS = 1 << 20, 3
LOG_MAX_BYTES_ENV = "HYBRID_LSP_LOG_MAX_BYTES"


def setup_logging(level: str = "info", max_bytes: int | None = None) -> Path | None:
    """Root logging to stderr and a size-capped rotating file (`LOG_MAX_BYTES` x
    (1 + `LOG_BACKUPS`), or `$HYBRID_LSP_LOG_MAX_BYTES` per file); pygls' chatter capped
    at WARNING."""
    if max_bytes is None:
        try:
            max_bytes = int(os.environ.get(LOG_MAX_BYTES_ENV, LOG_MAX_BYTES))
        except ValueError:
            max_bytes = LOG_MAX_BYTES
    max_bytes = max(max_bytes, 4096)
    root = logging.getLogger()
    root.setLevel(level.upper())
    fmt = logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(fmt)
    stderr.addFilter(REDACT)
    root.addHandler(stderr)
    path: Path | None = log_file_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fh = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes,
                                                  backupCount=LOG_BACKUPS, encoding="utf-8")
        fh.setFormatter(fmt)
        fh.addFilter(REDACT)
        root.addHandler(fh)
    except OSError as e:
        log.warning("no log file (%s)", e)
        path = None
    logging.getLogger("pygls").setLevel(logging.WARNING)
    return path
