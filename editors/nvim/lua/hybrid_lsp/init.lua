-- hybrid-lsp for Neovim: start `hybrid-lsp serve` for Rust buffers with the built-in client.
--
-- A thin client: it starts the server, forwards the settings and wires completion; all
-- logic lives in the server. Settings use the server's names (nested camelCase, the same
-- keys as the VS Code extension's `hybridLsp.*`), e.g. { completion = { maxTokens = 48 } }.
-- They go to the server as initializationOptions and answer its `workspace/configuration`
-- requests for the `hybridLsp` section.
--
-- Neovim versions: 0.7 has vim.lsp.start_client + buf_attach_client and omnifunc (used
-- there); 0.8 adds vim.lsp.start (used when present); 0.12 adds inline completion (ghost
-- text), enabled when present.

local M = {}

local SECTION = "hybridLsp"

M.defaults = {
  -- The server command; `hybrid-lsp` is looked up on PATH.
  cmd = { "hybrid-lsp", "serve" },
  -- Server settings (the server's names; see `hybrid-lsp`'s settings.py or the README).
  settings = {},
  filetypes = { "rust" },
  -- The workspace root is the nearest folder holding one of these, else the file's folder.
  root_markers = { "Cargo.toml", ".git" },
  -- Set 'omnifunc' so <C-x><C-o> asks the server for completion items.
  omnifunc = true,
  -- Ghost text on Neovim 0.12+ (vim.lsp.inline_completion); ignored before.
  inline_completion = true,
  -- Called as on_attach(client, bufnr) after the server attaches to a buffer.
  on_attach = nil,
}

M.config = vim.deepcopy(M.defaults)

-- Client ids by root folder (Neovim 0.7 path: one client per root, shared by its buffers).
local clients = {}

local function has(version)
  return vim.fn.has("nvim-" .. version) == 1
end

local function root_dir(bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local dir = vim.fn.fnamemodify(name, ":p:h")
  for _, marker in ipairs(M.config.root_markers) do
    local found = vim.fn.findfile(marker, dir .. ";")
    if found == "" then
      found = vim.fn.finddir(marker, dir .. ";")
    end
    if found ~= "" then
      local path = vim.fn.fnamemodify(found, ":p"):gsub("/$", "")
      return vim.fn.fnamemodify(path, ":h")
    end
  end
  return dir
end

-- A Lua table that encodes as a JSON object even when empty.
local function as_object(t)
  if t == nil or vim.tbl_isempty(t) then
    return vim.empty_dict()
  end
  return t
end

local function on_attach(client, bufnr)
  if M.config.omnifunc then
    vim.bo[bufnr].omnifunc = "v:lua.vim.lsp.omnifunc"
  end
  if M.config.inline_completion and vim.lsp.inline_completion ~= nil then
    pcall(vim.lsp.inline_completion.enable, true, { bufnr = bufnr })
  end
  if M.config.on_attach then
    M.config.on_attach(client, bufnr)
  end
end

local function client_config(root)
  return {
    name = "hybrid-lsp",
    cmd = M.config.cmd,
    root_dir = root,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
    init_options = as_object(M.config.settings),
    settings = { [SECTION] = as_object(M.config.settings) },
    on_attach = on_attach,
  }
end

--- Start (or reuse) the server for `bufnr` and attach it.
function M.attach(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if vim.api.nvim_buf_get_name(bufnr) == "" then
    return nil
  end
  local root = root_dir(bufnr)
  if has("0.8") then
    return vim.lsp.start(client_config(root), { bufnr = bufnr })
  end
  local id = clients[root]
  if id == nil or vim.lsp.get_client_by_id(id) == nil then
    id = vim.lsp.start_client(client_config(root))
    if id == nil then
      return nil
    end
    clients[root] = id
  end
  vim.lsp.buf_attach_client(bufnr, id)
  return id
end

--- Configure the plugin and start the server for Rust buffers (now and on FileType).
function M.setup(opts)
  opts = opts or {}
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace the defaults rather than merging with them index by index.
  for _, key in ipairs({ "cmd", "filetypes", "root_markers" }) do
    if opts[key] ~= nil then
      M.config[key] = opts[key]
    end
  end
  local group = vim.api.nvim_create_augroup("hybrid_lsp", { clear = true })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = M.config.filetypes,
    callback = function(args)
      M.attach(args.buf)
    end,
  })
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf)
        and vim.tbl_contains(M.config.filetypes, vim.bo[buf].filetype) then
      M.attach(buf)
    end
  end
end

return M
