"""editors/README.md's configuration snippets agree with the CLI and the server's settings.

Helix's TOML is parsed as TOML; eglot's Lisp with a small reader; the Neovim Lua snippets
run in headless Neovim with a stand-in `hybrid_lsp` module that records the options.
The command of each must be the installed script with arguments the CLI accepts, and the
settings must be accepted by the server's settings merge without a complaint.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hybrid_lsp.settings import Settings, merge_settings
from tests.editors.conftest import EDITORS, ROOT, tool_or_skip

README = EDITORS / "README.md"


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


def section(heading: str) -> str:
    """The README's text under `## heading`, up to the next `## `."""
    text = README.read_text()
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def script_name() -> str:
    """The console script that pyproject.toml installs for the CLI."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    [name] = [n for n, target in scripts.items() if target == "hybrid_lsp.cli:main"]
    return name


def assert_cli_accepts(args: list[str]) -> None:
    """`hybrid-lsp ARGS` parses, and selects the language server."""
    from hybrid_lsp.cli import build_parser

    parser = build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    choices = set().union(*(a.choices for a in subs))
    assert args[0] in choices, f"the CLI has no {args[0]!r} subcommand (has {sorted(choices)})"
    assert parser.parse_args(args).command == "serve"


def assert_valid_settings(raw: Any, *, changes: bool = True) -> None:
    """The server accepts every value in `raw` (and, with `changes`, not only defaults)."""
    settings, errors = merge_settings(Settings(), raw)
    assert not errors, errors
    if changes:
        assert settings != Settings(), "the snippet's settings should change something"


def test_helix_languages_toml() -> None:
    [snippet] = code_blocks(section("Helix"), "toml")
    config = tomllib.loads(snippet)
    server = config["language-server"]["hybrid-lsp"]
    assert server["command"] == script_name()
    assert_cli_accepts(server["args"])
    assert_valid_settings(server["config"])
    [rust] = [lang for lang in config["language"] if lang["name"] == "rust"]
    assert "hybrid-lsp" in rust["language-servers"]


# -- a small Emacs Lisp reader: lists, strings, numbers, symbols and keywords -------------

TOKEN = re.compile(r"""\s*(?:(;[^\n]*)|([()'.])|"((?:[^"\\]|\\.)*)"|([^\s()'";]+))""")


def read_lisp(text: str) -> list[Any]:
    """Top-level forms; strings -> str, numbers -> int/float, symbols -> ('sym', name)."""
    stack: list[list[Any]] = [[]]
    pos = 0
    while pos < len(text.rstrip()):
        m = TOKEN.match(text, pos)
        assert m, f"cannot read Lisp at {text[pos:pos + 20]!r}"
        pos = m.end()
        comment, punct, string, atom = m.groups()
        if comment:
            continue
        if punct == "(":
            stack.append([])
        elif punct == ")":
            done = stack.pop()
            stack[-1].append(done)
        elif punct in ("'", "."):
            stack[-1].append(("sym", punct))
        elif string is not None:
            stack[-1].append(string)
        elif re.fullmatch(r"-?\d+", atom):
            stack[-1].append(int(atom))
        elif re.fullmatch(r"-?\d+\.\d*", atom):
            stack[-1].append(float(atom))
        else:
            stack[-1].append(("sym", atom))
    assert len(stack) == 1, "unbalanced parentheses"
    return stack[0]


def plist_to_json(form: Any) -> Any:
    """A keyword plist (:a 1 :b (:c 2)) as a dict; other atoms as themselves."""
    if isinstance(form, list) and form and all(
            isinstance(k, tuple) and k[1].startswith(":") for k in form[::2]):
        return {key[1][1:]: plist_to_json(value) for key, value in zip(form[::2], form[1::2],
                                                                        strict=True)}
    return form


def symbols(form: Any) -> set[str]:
    if isinstance(form, list):
        return set().union(*map(symbols, form)) if form else set()
    return {form[1]} if isinstance(form, tuple) else set()


def find_contact(form: Any) -> list[Any] | None:
    """The eglot contact: the list after ` . ` in the (MODES . CONTACT) pair."""
    if isinstance(form, list):
        for i, item in enumerate(form):
            if item == ("sym", ".") and i + 1 < len(form):
                return form[i + 1]
            found = find_contact(item)
            if found is not None:
                return found
    return None


def test_eglot_snippet() -> None:
    [snippet] = code_blocks(section("Emacs (eglot)"), "elisp")
    forms = read_lisp(snippet)
    assert "eglot-server-programs" in symbols(forms), "expected eglot-server-programs"
    contact = find_contact(forms)
    assert contact is not None, "expected a (MODES . CONTACT) pair"
    program = [x for x in contact[:next((i for i, x in enumerate(contact)
                                          if isinstance(x, tuple)), len(contact))]]
    assert program[0] == script_name()
    assert_cli_accepts(program[1:])
    options = contact[contact.index(("sym", ":initializationOptions")) + 1]
    assert_valid_settings(plist_to_json(options))


def test_lua_snippets_call_setup_with_valid_settings(tmp_path: Path) -> None:
    nvim = tool_or_skip("nvim")
    snippets = code_blocks(README.read_text(), "lua") + code_blocks(
        (EDITORS / "nvim" / "README.md").read_text(), "lua")
    assert snippets
    for i, snippet in enumerate(snippets):
        (tmp_path / f"s{i}.lua").write_text(snippet)
        out = tmp_path / f"s{i}.json"
        record = "vim.fn.json_encode({ cmd = o.cmd, settings = o.settings })"
        stub = (f'package.loaded["hybrid_lsp"] = {{ setup = function(o) '
                f'vim.fn.writefile({{ {record} }}, "{out}") end }}')
        proc = subprocess.run([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n",
                               "-c", f"lua {stub}", "-c", f"luafile {tmp_path / f's{i}.lua'}",
                               "-c", "qa!"], capture_output=True, text=True, timeout=30)
        assert out.is_file(), f"snippet {i} did not call setup: {proc.stderr}"
        opts = json.loads(out.read_text())
        assert_valid_settings(opts["settings"], changes=False)
        if "cmd" in opts:
            assert opts["cmd"][0] == script_name()
            assert_cli_accepts(opts["cmd"][1:])


@pytest.mark.parametrize("readme", ["README.md", "nvim/README.md", "vscode/README.md"])
def test_readmes_name_the_server_command(readme: str) -> None:
    assert "hybrid-lsp serve" in (EDITORS / readme).read_text()
