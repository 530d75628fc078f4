"""`hybrid-lsp serve`: run the language server over stdio (default) or TCP (debugging)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `serve` on the CLI's subparsers."""
    p = subparsers.add_parser("serve", help="run the language server (stdio by default)",
                              description=__doc__)
    p.add_argument("--tcp", metavar="HOST:PORT", default=None,
                   help="listen on TCP instead of stdio (for debugging; one client)")
    p.add_argument("--log-level", default=None, choices=("error", "warning", "info", "debug"),
                   help="initial log level (the log.level setting overrides it)")
    p.set_defaults(func=run)
    return p


def _host_port(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {spec!r}")
    return host or "127.0.0.1", int(port)


async def _serve_stdio(server) -> None:
    from pygls.io_ import StdoutWriter

    from hybrid_lsp.transport import LspLogHandler, private_stdout, serve_frames

    out = private_stdout()
    server.protocol.set_writer(StdoutWriter(out))
    logging.getLogger().addHandler(
        LspLogHandler(server.window_log_message, asyncio.get_running_loop()))
    # A private reader of fd 0: the interpreter never touches it at exit, so the reader
    # thread blocked in it cannot deadlock shutdown (sys.stdin's lock would).
    stdin = open(os.dup(sys.stdin.fileno()), "rb")  # noqa: SIM115 (lives as long as the server)
    await serve_frames(server.protocol, stdin)


async def _serve_tcp(server, host: str, port: int) -> None:
    """Accept one client on HOST:PORT and serve it (blocking socket files, reader thread)."""
    import socket

    from pygls.io_ import StdoutWriter

    from hybrid_lsp.transport import LspLogHandler, serve_frames

    loop = asyncio.get_running_loop()
    with socket.create_server((host, port)) as listener:
        log.info("listening on %s:%d", host, port)
        conn, peer = await loop.run_in_executor(None, listener.accept)
    log.info("client %s connected", peer)
    with conn:
        server.protocol.set_writer(StdoutWriter(conn.makefile("wb")))
        logging.getLogger().addHandler(LspLogHandler(server.window_log_message, loop))
        await serve_frames(server.protocol, conn.makefile("rb"))


def run(args: argparse.Namespace) -> int:
    """Serve until the client disconnects or sends `exit`; the exit status."""
    from hybrid_lsp.server import SERVER
    from hybrid_lsp.transport import setup_logging

    path = setup_logging(args.log_level or "info")
    log.info("hybrid-lsp serve (log file %s)", path)
    try:
        if args.tcp:
            host, port = _host_port(args.tcp)
            asyncio.run(_serve_tcp(SERVER, host, port))
        else:
            asyncio.run(_serve_stdio(SERVER))
    except ValueError as e:
        log.error("%s", e)
        return 2
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    except SystemExit as e:  # `exit` notification
        return int(e.code or 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m hybrid_lsp.serve_cmd`: the same as `hybrid-lsp serve`."""
    parser = argparse.ArgumentParser(prog="hybrid-lsp")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
