// The VS Code extension: start `hybrid-lsp serve` for Rust files and forward the settings.
//
// A thin client. Completion items come from vscode-languageclient; ghost text
// (textDocument/inlineCompletion, LSP 3.18) from its proposed inline-completion feature.
// The status-bar item shows the backend and the completion latency from the server's
// status command; the reindex command forwards to the server's.

import * as vscode from "vscode";
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from "vscode-languageclient/node";

import {
  CLIENT_SECTION,
  DOCUMENT_SELECTOR,
  SECTION,
  SERVER_COMMANDS,
  ServerStatus,
  formatStatus,
  serverLaunch,
  serverSettings,
} from "./launch";

/** How often the status-bar item asks the server for its status, in milliseconds. */
const STATUS_POLL_MS = 5000;

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  statusItem.command = "hybrid-lsp.showStatus";
  statusItem.show();
  const timer = setInterval(() => void refreshStatus(), STATUS_POLL_MS);
  context.subscriptions.push(
    statusItem,
    { dispose: () => clearInterval(timer) },
    vscode.commands.registerCommand("hybrid-lsp.reindex", reindex),
    vscode.commands.registerCommand("hybrid-lsp.showStatus", showStatus),
    vscode.commands.registerCommand("hybrid-lsp.restart", restart),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration(CLIENT_SECTION)) {
        void restart();
      }
    }),
  );
  await start();
}

export async function deactivate(): Promise<void> {
  await stop();
}

async function start(): Promise<void> {
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const serverPath = vscode.workspace.getConfiguration(CLIENT_SECTION).get<string>("serverPath");
  const serverOptions: ServerOptions = serverLaunch(serverPath, folder);
  const clientOptions: LanguageClientOptions = {
    documentSelector: DOCUMENT_SELECTOR,
    initializationOptions: () => serverSettings(vscode.workspace.getConfiguration().get(SECTION)),
    synchronize: { configurationSection: SECTION },
    outputChannelName: "hybrid-lsp",
  };
  client = new LanguageClient("hybridLsp", "hybrid-lsp", serverOptions, clientOptions);
  client.registerProposedFeatures(); // textDocument/inlineCompletion
  try {
    await client.start();
  } catch (e) {
    void vscode.window.showErrorMessage(
      `hybrid-lsp: could not start "${serverOptions.command} serve" (${String(e)}). ` +
      `Install hybrid-lsp or set ${CLIENT_SECTION}.serverPath.`);
  }
  await refreshStatus();
}

async function stop(): Promise<void> {
  const old = client;
  client = undefined;
  if (old) {
    await old.stop();
  }
}

async function restart(): Promise<void> {
  await stop();
  await start();
}

async function executeOnServer(command: string): Promise<unknown> {
  if (!client || client.state !== State.Running) {
    return undefined;
  }
  return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [] });
}

async function refreshStatus(): Promise<ServerStatus | undefined> {
  let st: ServerStatus | undefined;
  try {
    st = (await executeOnServer(SERVER_COMMANDS.status)) as ServerStatus | undefined;
  } catch {
    st = undefined; // A busy or restarting server: show "not running" until the next poll.
  }
  const shown = formatStatus(st);
  if (statusItem) {
    statusItem.text = shown.text;
    statusItem.tooltip = shown.tooltip;
  }
  return st;
}

async function reindex(): Promise<void> {
  const result = (await executeOnServer(SERVER_COMMANDS.reindex)) as
    { indexFiles?: number } | undefined;
  if (result === undefined) {
    void vscode.window.showWarningMessage("hybrid-lsp: the server is not running");
    return;
  }
  vscode.window.setStatusBarMessage(`hybrid-lsp: reindexed (${result.indexFiles ?? 0} files)`,
                                    3000);
  await refreshStatus();
}

async function showStatus(): Promise<void> {
  const st = await refreshStatus();
  void vscode.window.showInformationMessage(formatStatus(st).tooltip, { modal: false });
}
