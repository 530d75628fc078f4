// npm test: start the server through launch.ts, as the extension does, and drive it over
// stdio with vscode-jsonrpc: initialize, open a Rust file, ask for an inline completion.
//
// Environment: HYBRID_LSP_SERVER (the executable; default: the repository's
// .venv/bin/hybrid-lsp, else `hybrid-lsp` on PATH), HYBRID_LSP_TEST_SETTINGS (JSON settings
// sent as initializationOptions; default: the embedded model), HYBRID_LSP_TEST_EXPECT (optional:
// the characters the completion must consist of, for a model whose output is known).

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import {
  MessageConnection,
  StreamMessageReader,
  StreamMessageWriter,
  createMessageConnection,
} from "vscode-jsonrpc/node";

import {
  SECTION,
  SERVER_COMMANDS,
  ServerStatus,
  formatStatus,
  serverLaunch,
  settingKeys,
  spawnServer,
} from "../launch";

const PACKAGE_DIR = path.resolve(__dirname, "..", "..");
const FIXTURE = path.join(PACKAGE_DIR, "test-fixture");
const CURSOR_LINE_END = "let a = ";

function serverPath(): string {
  const venv = path.resolve(PACKAGE_DIR, "..", "..", ".venv", "bin", "hybrid-lsp");
  return process.env.HYBRID_LSP_SERVER || (existsSync(venv) ? venv : "hybrid-lsp");
}

function testSettings(): Record<string, unknown> {
  const raw = process.env.HYBRID_LSP_TEST_SETTINGS;
  return raw ? JSON.parse(raw) : { completion: { debounceMs: 0, maxTokens: 16 } };
}

/** The contributed `hybridLsp.*` keys of package.json, without the prefix. */
function contributedKeys(): string[] {
  const pkg = JSON.parse(readFileSync(path.join(PACKAGE_DIR, "package.json"), "utf8"));
  const blocks = [pkg.contributes.configuration].flat();
  return blocks.flatMap((b: { properties: object }) => Object.keys(b.properties))
    .filter((k: string) => k.startsWith(`${SECTION}.`))
    .map((k: string) => k.slice(SECTION.length + 1));
}

/** (line, UTF-16 character) at the end of the line ending in CURSOR_LINE_END. */
function cursor(text: string): { line: number; character: number } {
  const lines = text.split("\n");
  const line = lines.findIndex((l) => l.endsWith(CURSOR_LINE_END));
  assert.ok(line >= 0, `expected a line ending in ${JSON.stringify(CURSOR_LINE_END)}`);
  return { line, character: lines[line].length }; // JS strings count UTF-16 code units
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitReady(conn: MessageConnection, timeoutMs: number): Promise<ServerStatus> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const st: ServerStatus = await conn.sendRequest("workspace/executeCommand",
                                                    { command: SERVER_COMMANDS.status });
    if (st.engineState === "ready" || Date.now() > end) {
      return st;
    }
    await sleep(200);
  }
}

test("the server starts through launch.ts and answers an inline completion", { timeout: 150_000 },
     async () => {
  const launch = serverLaunch(serverPath(), FIXTURE);
  const proc = spawnServer(launch);
  let stderr = "";
  proc.stderr?.on("data", (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-4000); });
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  proc.on("error", (e) => { stderr += `\nspawn failed: ${e}`; });

  const conn = createMessageConnection(new StreamMessageReader(proc.stdout!),
                                       new StreamMessageWriter(proc.stdin!));
  const settings = testSettings();
  const messages: { type: number; message: string }[] = [];
  conn.onNotification("window/showMessage", (p: { type: number; message: string }) => {
    messages.push(p);
  });
  conn.onRequest((method: string, params: unknown) => {
    if (method === "workspace/configuration") {
      const items = (params as { items: { section?: string }[] }).items;
      return items.map((item) => (item.section === SECTION ? settings : null));
    }
    return null; // client/registerCapability, window/workDoneProgress/create
  });
  conn.listen();
  void exited.then(() => conn.dispose()); // A server that dies fails pending requests now.

  try {
    const init: { capabilities: Record<string, unknown> } = await conn.sendRequest("initialize", {
      processId: process.pid,
      rootUri: pathToFileURL(FIXTURE).href,
      capabilities: {
        workspace: { configuration: true },
        textDocument: {
          inlineCompletion: { dynamicRegistration: false },
          completion: { completionItem: { snippetSupport: false } },
        },
      },
      initializationOptions: settings,
    });
    assert.ok(init.capabilities.inlineCompletionProvider, "no inline completion capability");
    conn.sendNotification("initialized", {});

    const st = await waitReady(conn, 90_000);
    assert.equal(st.engineState, "ready", `engine not ready: ${JSON.stringify(st)}\n${stderr}`);
    // The server's own settings tree has exactly the keys the extension contributes.
    const serverKeys = settingKeys((st as { settings?: unknown }).settings).sort();
    assert.deepEqual(serverKeys, contributedKeys().sort());

    const file = path.join(FIXTURE, "src", "lib.rs");
    const text = readFileSync(file, "utf8");
    const uri = pathToFileURL(file).href;
    conn.sendNotification("textDocument/didOpen", {
      textDocument: { uri, languageId: "rust", version: 1, text },
    });
    const position = cursor(text);
    const answer: { items: { insertText: string | { value: string };
                             range?: { start: unknown; end: unknown } }[] } =
      await conn.sendRequest("textDocument/inlineCompletion", {
        textDocument: { uri }, position, context: { triggerKind: 1 },
      });
    assert.ok(Array.isArray(answer.items), `no inline completion list: ${JSON.stringify(answer)}`);
    assert.ok(answer.items.length >= 1, `no inline completion\n${stderr}`);
    for (const item of answer.items) {
      const insert = typeof item.insertText === "string" ? item.insertText : item.insertText.value;
      assert.ok(insert.trim().length > 0 && !insert.includes("<|"), JSON.stringify(item));
      assert.deepEqual(item.range?.start, position);
      const expect = process.env.HYBRID_LSP_TEST_EXPECT;
      if (expect) {
        assert.match(insert, new RegExp(`^[${expect}]+$`));
      }
    }

    const after = await waitReady(conn, 1000);
    assert.ok((after.latencyMs?.count ?? 0) >= 1);
    assert.match(formatStatus(after).text, new RegExp(`${after.backend} · \\d+ ms`));
    assert.deepEqual(messages.filter((m) => m.type <= 2), [], "the server rejected settings");

    await conn.sendRequest("shutdown");
    conn.sendNotification("exit");
    const code = await Promise.race([exited, sleep(10_000).then(() => "timeout")]);
    assert.equal(code, 0, `server exit: ${code}\n${stderr}`);
  } catch (e) {
    throw new Error(`${e instanceof Error ? e.stack : String(e)}\nserver stderr (tail):\n${stderr}`);
  } finally {
    conn.dispose();
    if (proc.exitCode === null) {
      proc.kill("SIGKILL");
    }
  }
});

test("formatStatus shows the backend and latency", () => {
  assert.equal(formatStatus(undefined).text, "$(circle-slash) hybrid-lsp");
  assert.match(formatStatus({ engineState: "loading" }).text, /loading/);
  const shown = formatStatus({ engineState: "ready", backend: "llama", device: "cpu",
                               model: "demo", latencyMs: { count: 3, p50: 84.4, p95: 120 } });
  assert.equal(shown.text, "$(zap) llama · 84 ms");
  assert.match(shown.tooltip, /last -, p50 84 ms, p95 120 ms over 3 completions/);
  const withLast = formatStatus({ engineState: "ready", backend: "torch",
                                  latencyMs: { count: 3, last: 61.2, p50: 84.4, p95: 120 } });
  assert.equal(withLast.text, "$(zap) torch · 61 ms");
});

test("serverLaunch defaults to hybrid-lsp serve", () => {
  assert.deepEqual(serverLaunch(undefined).args, ["serve"]);
  assert.equal(serverLaunch("").command, "hybrid-lsp");
  assert.equal(serverLaunch(" /opt/bin/hybrid-lsp ").command, "/opt/bin/hybrid-lsp");
});
