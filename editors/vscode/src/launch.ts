// How the extension starts and talks to `hybrid-lsp serve`, without importing `vscode`.
//
// The extension (extension.ts) and the tests (npm test, which cannot run VS Code here) use
// this module, so the tests start the server exactly as the extension does.

import { ChildProcess, spawn } from "node:child_process";

/** The settings section the server reads (`workspace/configuration`) and our prefix. */
export const SECTION = "hybridLsp";
/** The client-only settings (how to start the server); never sent to the server. */
export const CLIENT_SECTION = "hybridLspClient";
export const DEFAULT_SERVER_PATH = "hybrid-lsp";
export const SERVER_ARGS: readonly string[] = ["serve"];
export const DOCUMENT_SELECTOR = [
  { scheme: "file", language: "rust" },
  { scheme: "untitled", language: "rust" },
];

/** The server's `workspace/executeCommand` commands. */
export const SERVER_COMMANDS = {
  status: "hybridLsp.status",
  reindex: "hybridLsp.reindex",
} as const;

/** How to start the server: the shape of vscode-languageclient's `Executable`. */
export interface Launch {
  command: string;
  args: string[];
  options: { env: NodeJS.ProcessEnv; cwd?: string };
}

/** `<serverPath> serve`; an empty or missing path means `hybrid-lsp` on PATH. */
export function serverLaunch(serverPath?: string, cwd?: string,
                             env: NodeJS.ProcessEnv = process.env): Launch {
  const command = serverPath && serverPath.trim() ? serverPath.trim() : DEFAULT_SERVER_PATH;
  return { command, args: [...SERVER_ARGS], options: { env: { ...env }, cwd } };
}

/** Start the server as the extension would, with stdio pipes (used by the tests). */
export function spawnServer(launch: Launch): ChildProcess {
  return spawn(launch.command, launch.args, {
    cwd: launch.options.cwd,
    env: launch.options.env,
    stdio: ["pipe", "pipe", "pipe"],
  });
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * The settings as the server expects them: a nested object of the `hybridLsp` section
 * with VS Code's extra members (functions, undefined) dropped.
 */
export function serverSettings(section: unknown): { [key: string]: Json } {
  const plain = JSON.parse(JSON.stringify(section ?? {})) as unknown;
  if (plain === null || typeof plain !== "object" || Array.isArray(plain)) {
    return {};
  }
  return plain as { [key: string]: Json };
}

/** Dotted keys of every leaf of a nested settings object (`completion.debounceMs`). */
export function settingKeys(settings: unknown, prefix = ""): string[] {
  if (settings === null || typeof settings !== "object" || Array.isArray(settings)) {
    return prefix ? [prefix] : [];
  }
  return Object.entries(settings as Record<string, unknown>).flatMap(([key, value]) =>
    settingKeys(value, prefix ? `${prefix}.${key}` : key));
}

/** The part of the `hybridLsp.status` answer that the status bar shows. */
export interface ServerStatus {
  backend?: string | null;
  device?: string | null;
  model?: string | null;
  engineState?: string;
  engineDetail?: string;
  latencyMs?: { count?: number; last?: number | null; p50?: number | null; p95?: number | null };
}

/**
 * Status-bar text and tooltip: the backend and the latest completion latency (the
 * server's `latencyMs.last` when it reports one, else the median of recent completions).
 */
export function formatStatus(st: ServerStatus | null | undefined): { text: string; tooltip: string } {
  if (!st) {
    return { text: "$(circle-slash) hybrid-lsp", tooltip: "hybrid-lsp: server not running" };
  }
  if (st.engineState !== "ready") {
    const state = st.engineState ?? "starting";
    return {
      text: `$(loading~spin) hybrid-lsp: ${state}`,
      tooltip: `hybrid-lsp: engine ${state}${st.engineDetail ? ` (${st.engineDetail})` : ""}`,
    };
  }
  const lat = st.latencyMs ?? {};
  const ms = (v: number | null | undefined) => (typeof v === "number" ? `${Math.round(v)} ms` : "-");
  const shown = typeof lat.last === "number" ? lat.last : lat.p50;
  return {
    text: `$(zap) ${st.backend ?? "?"} · ${typeof shown === "number" ? ms(shown) : "no completions yet"}`,
    tooltip: [
      `hybrid-lsp: model ${st.model ?? "?"} on ${st.backend ?? "?"} (${st.device ?? "?"})`,
      `completion latency: last ${ms(lat.last)}, p50 ${ms(lat.p50)}, p95 ${ms(lat.p95)} ` +
        `over ${lat.count ?? 0} completions`,
    ].join("\n"),
  };
}
