"""A real client: headless Neovim runs the plugin in editors/nvim against the real server.

Neovim opens the fixture crate's lib.rs, `require("hybrid_lsp").setup({...})` starts
`hybrid-lsp serve` for the Rust buffer, and a Lua script asks for completion through
Neovim's own LSP client (`vim.lsp.buf_request_sync`), then writes what it saw to a JSON
file that this test checks: the items, their textEdit range, the settings the server
received, and the buffer's omnifunc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.editors.conftest import (
    EDITORS,
    PREDICTED,
    copy_fixture,
    cursor_position,
    server_env,
    server_executable,
    tool_or_skip,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

NVIM_TIMEOUT_S = 150

# The Lua side: everything in one function so any error lands in the JSON, then quit.
SCRIPT = r"""
local args = vim.fn.json_decode(vim.fn.readfile(vim.env.HL_ARGS))
local result = { nvim = vim.version() }
local function status(bufnr)
  local replies = vim.lsp.buf_request_sync(bufnr, "workspace/executeCommand",
    { command = "hybridLsp.status", arguments = {} }, 5000)
  for _, reply in pairs(replies or {}) do
    if reply.result then return reply.result end
  end
  return nil
end
local ok, err = xpcall(function()
  vim.opt.runtimepath:prepend(args.plugin)
  vim.cmd("filetype on")
  require("hybrid_lsp").setup({ cmd = args.cmd, settings = args.settings })
  vim.cmd("edit " .. vim.fn.fnameescape(args.file))
  local bufnr = vim.api.nvim_get_current_buf()
  result.filetype = vim.bo[bufnr].filetype
  vim.wait(30000, function()
    for _, client in pairs(vim.lsp.buf_get_clients(bufnr)) do
      if client.initialized then result.attached = true end
    end
    return result.attached
  end, 50)
  if not result.attached then return end
  -- Later waits end early when the client is gone (the server exited).
  local function gone() return next(vim.lsp.buf_get_clients(bufnr)) == nil end
  result.clients = {}
  for _, client in pairs(vim.lsp.buf_get_clients(bufnr)) do
    table.insert(result.clients, { name = client.name, root = client.config.root_dir })
  end
  result.omnifunc = vim.bo[bufnr].omnifunc
  -- The engine loads the model in the background: wait until the server says it is ready.
  vim.wait(90000, function()
    result.status = status(bufnr)
    return (result.status ~= nil and result.status.engineState == "ready") or gone()
  end, 200)
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = args.line, character = args.character },
  }
  local replies, why = vim.lsp.buf_request_sync(bufnr, "textDocument/completion", params, 60000)
  result.completion_error = why
  result.completion = {}
  for _, reply in pairs(replies or {}) do
    table.insert(result.completion, { result = reply.result, error = reply.err or reply.error })
  end
  result.status_after = status(bufnr)
  -- A second Rust buffer of the same crate shares the running server.
  vim.cmd("edit " .. vim.fn.fnameescape(args.other))
  local other = vim.api.nvim_get_current_buf()
  vim.wait(5000, function() return next(vim.lsp.buf_get_clients(other)) ~= nil end, 20)
  result.client_ids = {}
  for _, b in ipairs({ bufnr, other }) do
    for id, _ in pairs(vim.lsp.buf_get_clients(b)) do table.insert(result.client_ids, id) end
  end
  result.active_clients = #vim.lsp.get_active_clients()
end, debug.traceback)
if not ok then result.error = err end
vim.fn.writefile({ vim.fn.json_encode(result) }, args.out)
vim.cmd("qa!")
"""


def run_nvim(tmp: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Run SCRIPT in headless Neovim with `args`; the JSON it wrote."""
    nvim = tool_or_skip("nvim")
    (tmp / "args.json").write_text(json.dumps(args))
    (tmp / "init.lua").write_text(SCRIPT)
    env = server_env(tmp)
    env.update(HL_ARGS=str(tmp / "args.json"), XDG_STATE_HOME=str(tmp / "state"),
               XDG_DATA_HOME=str(tmp / "data"), XDG_CONFIG_HOME=str(tmp / "config"))
    cmd = [nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n",
           "-c", f"luafile {tmp / 'init.lua'}"]
    # Its own session, so that a hang can be ended with the server and engine it started.
    proc = subprocess.Popen(cmd, cwd=args["root"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=NVIM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"nvim ran past {NVIM_TIMEOUT_S} s:\n{output.decode(errors='replace')}")
    out = Path(args["out"])
    assert out.is_file(), f"nvim wrote no result (exit {proc.returncode}):\n{output!r}"
    return json.loads(out.read_text())


def test_nvim_completion_through_plugin(tmp_path: Path, editor_model: tuple[Path, bool],
                                        editor_backend: str) -> None:
    model, is_default = editor_model
    ws = copy_fixture(tmp_path)
    lib = ws / "src" / "lib.rs"
    line, character = cursor_position(lib.read_text())
    # The shipped model is the server's default: leave model.path unset, as a user would.
    settings = {"model": {"backend": editor_backend} if is_default else
                {"path": str(model), "backend": editor_backend},
                "completion": {"debounceMs": 0, "maxTokens": 16, "latencyBudgetMs": 20000,
                               "contextBudgetTokens": 512}}
    got = run_nvim(tmp_path, {
        "plugin": str(EDITORS / "nvim"), "cmd": [str(server_executable(tmp_path)), "serve"],
        "settings": settings, "file": str(lib), "root": str(ws), "line": line,
        "character": character, "out": str(tmp_path / "result.json"),
        "other": str(ws / "src" / "other.rs"),
    })
    assert "error" not in got, got.get("error")
    assert got["filetype"] == "rust"
    assert got.get("attached"), f"the server never initialized: {got}"
    assert got["clients"] == [{"name": "hybrid-lsp", "root": str(ws)}]
    assert got["omnifunc"] == "v:lua.vim.lsp.omnifunc"

    status = got["status"]
    assert status and status["engineState"] == "ready", status
    assert status["backend"] == editor_backend
    # The plugin's settings reached the server under the server's own names.
    assert status["settings"]["completion"]["maxTokens"] == 16
    assert status["settings"]["model"]["backend"] == editor_backend
    assert Path(status["modelPath"]) == model

    assert got.get("completion_error") is None  # Lua nil: absent
    [reply] = got["completion"]
    assert reply.get("error") is None, reply
    result = reply["result"]
    items = result["items"] if isinstance(result, dict) else result
    assert items, f"no completion: {got}"
    for item in items:
        edit = item["textEdit"]
        assert edit["range"]["end"] == {"line": line, "character": character}
        assert edit["range"]["start"]["line"] == line
        assert edit["range"]["start"]["character"] <= character
        assert edit["newText"].strip() and edit["newText"] == edit["newText"].rstrip()
        assert "<|" not in edit["newText"]
        assert "hybrid-lsp" in item["detail"] and "ms" in item["detail"]
        if not is_default:  # the model's completion is known: inserted at the cursor
            assert set(edit["newText"]) == set(PREDICTED), edit
            assert edit["range"]["start"] == edit["range"]["end"]
    assert got["status_after"]["latencyMs"]["count"] >= 1
    first, second = got["client_ids"]
    assert first == second and got["active_clients"] == 1
