"""R16 (no workspace code executed) and R17 (secrets never copied): one server session on
a hostile workspace, under an audit hook, with a stub engine that records its prompts."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.harness import TimedServer, stub_env

pytestmark = [pytest.mark.timeout(120)]

#: Executables a hostile workspace (or its toolchain) could get us to run.
TOOLS = ("cargo", "rustc", "rustup", "rust-analyzer", "git", "rustfmt", "clippy-driver",
         "build-script-build", "wrap.sh", "run.sh")
SECRETS = {".env": "env", ".env.production": "envprod", "config/.env.local": "envlocal",
           "server.pem": "pem", "keys/id_rsa": "idrsa", ".ssh/id_ed25519": "ided",
           "tls/client.key": "key", "src/private.rs": "gitignored_rs",
           "secrets/token.rs": "gitignored_dir"}


def canary(name: str) -> str:
    return f"CANARY_{name}_8c1f03"


def make_hostile_workspace(root: Path, markers: Path) -> Path:
    """A crate with build.rs, a proc-macro member, .cargo/config runner and rustc wrapper,
    a rust-toolchain file, tool shims on PATH, pickles and Python start-up hooks; every
    one of them writes a file into `markers` if it ever runs. Plus secret files."""
    def put(rel: str, text: str, mode: int = 0o644) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    m = str(markers)
    put("Cargo.toml", '[package]\nname = "hostile"\nversion = "0.1.0"\nbuild = "build.rs"\n\n'
        '[dependencies]\npm = { path = "pm" }\n\n[workspace]\nmembers = ["pm"]\n')
    put("build.rs", f'fn main() {{ std::fs::write("{m}/build_rs", "ran").unwrap(); }}\n')
    put("pm/Cargo.toml", '[package]\nname = "pm"\nversion = "0.1.0"\n\n[lib]\nproc-macro = true\n')
    put("pm/src/lib.rs", "use proc_macro::TokenStream;\n#[proc_macro_derive(Evil)]\n"
        "pub fn evil(_: TokenStream) -> TokenStream {\n"
        f'    std::fs::write("{m}/proc_macro", "ran").unwrap();\n    TokenStream::new()\n}}\n')
    put(".cargo/config.toml", f'[build]\nrustc-wrapper = "{root}/bin/wrap.sh"\n'
        f'[target.\'cfg(all())\']\nrunner = "{root}/bin/run.sh"\n'
        '[alias]\nb = "run --release"\n[env]\nRUSTC_BOOTSTRAP = "1"\n')
    put("rust-toolchain.toml", '[toolchain]\nchannel = "nightly-2099-01-01"\n')
    put("rust-toolchain", "nightly-2099-01-01\n")
    for tool in TOOLS:
        put(f"bin/{tool}", f"#!/bin/sh\necho ran > {m}/{tool}\n", 0o755)
    put("src/lib.rs", "#[derive(pm::Evil)]\npub struct Shape { pub w: u32 }\n\n"
        'include!(concat!(env!("OUT_DIR"), "/gen.rs"));\n\n'
        "pub fn area(s: &Shape) -> u32 {\n    \n}\n\n"
        "pub fn perimeter(s: &Shape) -> u32 {\n    s.w * 4\n}\n")
    put("src/main.rs", "fn main() {\n    \n}\n")
    # Python start-up hooks and pickles: run only if the workspace were on sys.path or
    # a pickle were loaded.
    hook = f"import pathlib; pathlib.Path('{m}/python').write_text('ran')\n"
    put("sitecustomize.py", hook)
    put("usercustomize.py", hook)
    put("evil.pth", hook)
    put("src/evil.pth", hook)
    payload = (b"cos\nsystem\n(S'echo ran > " + m.encode() + b"/pickle'\ntR.")
    for rel in ("index.pkl", "model.pt", "src/cache.pickle", ".hybrid-lsp/index.pkl"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(payload)
    put(".gitignore", "src/private.rs\nsecrets/\ntarget/\n")
    for rel, name in SECRETS.items():
        c = canary(name)
        body = f"pub const KEY: &str = \"{c}\";\n" if rel.endswith(".rs") else (
            f"-----BEGIN PRIVATE KEY-----\n{c}\n-----END PRIVATE KEY-----\n"
            if "=" not in c else c)
        put(rel, body if not rel.startswith(".env") and ".env" not in rel
            else f"API_KEY={c}\n")
    return root


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict:
    """Index the hostile workspace and ask for completions; everything the server left."""
    tmp = tmp_path_factory.mktemp("hostile")
    markers = tmp / "markers"
    markers.mkdir()
    ws = make_hostile_workspace(tmp / "ws", markers)
    audit, prompts = tmp / "audit.jsonl", tmp / "prompts.jsonl"
    env = stub_env((5, 20), HYBRID_LSP_AUDIT_LOG=str(audit),
                   HYBRID_LSP_STUB_PROMPTS=str(prompts),
                   PATH=f"{ws / 'bin'}{os.pathsep}{os.environ['PATH']}",
                   CARGO_HOME=str(tmp / "cargo_home"), RUSTUP_HOME=str(tmp / "rustup_home"))
    server = TimedServer(tmp, env)
    t0 = time.monotonic()
    try:
        server.initialize(ws, tiny_model, log={"level": "debug", "includeText": True})
        end = time.monotonic() + 30
        while server.status(f"idx-{time.monotonic()}")["indexFiles"] < 3:
            assert time.monotonic() < end, "workspace never indexed"
            time.sleep(0.1)
        for rel in ("src/lib.rs", "src/main.rs", ".env", "server.pem", "src/private.rs",
                    "secrets/token.rs", "config/.env.local"):
            server.open(ws / rel)
        results = []
        for k, (rel, line) in enumerate([("src/lib.rs", 6), ("src/main.rs", 1),
                                         ("src/lib.rs", 10)] * 3):
            params = {"textDocument": {"uri": (ws / rel).as_uri()},
                      "position": {"line": line, "character": 4}}
            results.append(server.request(f"c{k}", "textDocument/completion", params))
            results.append(server.request(f"i{k}", "textDocument/inlineCompletion",
                                          {**params, "context": {"triggerKind": 1}}))
        for rel in (".env", "src/private.rs", "server.pem"):
            server.send({"jsonrpc": "2.0", "method": "textDocument/didSave",
                         "params": {"textDocument": {"uri": (ws / rel).as_uri()}}})
        results.append(server.request("reindex", "workspace/executeCommand",
                                      {"command": "hybridLsp.reindex"}))
        st = server.status("end")
        assert server.close() == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    events = [json.loads(ln) for ln in audit.read_text().splitlines()] if audit.exists() else []
    return {"tmp": tmp, "ws": ws, "markers": markers, "events": events, "status": st,
            "prompts": prompts.read_text() if prompts.exists() else "",
            "results": results, "seconds": time.monotonic() - t0}


def allowed_spawn(e: dict) -> bool:
    """The engine child and the indexer's worker pool: our own interpreter, our modules."""
    args = " ".join(e["args"][:2])         # executable and argv (not the environment)
    if e["event"] == "os.fork":
        return True                 # multiprocessing's forkserver forking a worker
    return repr(sys.executable) in args and (
        "engine.worker" in args or "multiprocessing" in args)


def test_r16_no_workspace_code_executed(session: dict) -> None:
    """0 markers written; every process spawn is the engine child or an indexer worker
    (our interpreter, our modules), none names a workspace path or a Rust tool; 0
    `pickle.find_class`; 0 files written inside the workspace."""
    ws = str(session["ws"])
    spawns = [e for e in session["events"]
              if e["event"].startswith(("subprocess.Popen", "os.exec", "os.posix_spawn",
                                        "os.spawn", "os.system", "os.fork"))]
    bad = [e for e in spawns if not allowed_spawn(e) or ws in " ".join(e["args"][:2])
           or any(f"/{t}'" in " ".join(e["args"][:2]) for t in TOOLS)]
    unpickles = [e for e in session["events"] if e["event"] == "pickle.find_class"]
    writes = [e for e in session["events"] if e["event"] == "open" and ws in e["args"][0]]
    markers = sorted(p.name for p in session["markers"].iterdir())
    print(f"\nR16: {len(session['events'])} audit events, {len(spawns)} spawns (all ours), "
          f"{len(unpickles)} unpickles, {len(markers)} markers, {len(writes)} writes in the "
          f"workspace; session {session['seconds']:.1f} s")
    assert markers == []
    assert bad == [], bad[:5]
    assert any("engine.worker" in " ".join(e["args"]) for e in spawns)   # the hook saw it
    assert unpickles == []
    assert writes == [], writes[:5]
    assert session["status"]["indexFiles"] >= 3


def test_r17_secrets_never_copied(session: dict) -> None:
    """No canary byte from `.env*`, `*.pem`, `*.key`, `id_rsa`, `id_ed25519` or gitignored
    files (all open in the editor, saved, reindexed) in the SQLite files, the logs, the
    prompts the engine received, or any response; database 0600 in a 0700 folder."""
    tmp: Path = session["tmp"]
    canaries = [canary(n).encode() for n in SECRETS.values()]
    places: dict[str, bytes] = {"prompts": session["prompts"].encode(),
                                "responses": json.dumps(session["results"]).encode()}
    dbs = list((tmp / "cache").rglob("*.sqlite3"))
    assert dbs, "no index database written"
    for folder in (tmp / "cache", tmp / "logs"):
        for p in folder.rglob("*"):
            if p.is_file():
                places[str(p.relative_to(tmp))] = p.read_bytes()
    leaks = {where: [c.decode() for c in canaries if c in data]
             for where, data in places.items()}
    leaks = {k: v for k, v in leaks.items() if v}
    print(f"\nR17: {len(canaries)} canaries, {len(places)} places checked "
          f"({sum(map(len, places.values())) // 1024} KB), {session['prompts'].count(chr(10))}"
          f" prompts: {len(leaks)} leaks")
    assert session["prompts"].count("\n") >= 3          # the prompts were seen
    assert leaks == {}
    for db in dbs:
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
