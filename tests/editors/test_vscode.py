"""The VS Code extension in editors/vscode: its manifest, `npm test` and the .vsix.

VS Code itself cannot run here, so `npm test` starts the real server through the
extension's launch module and drives it with vscode-jsonrpc (see src/test/server.test.ts);
this file runs it on the fixture model, checks that the contributed settings are exactly
the server's, and that `npm run package` builds an installable .vsix.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hybrid_lsp.settings import SECTION, settings_schema
from tests.editors.conftest import (
    EDITORS,
    PREDICTED,
    server_env,
    server_executable,
    tool_or_skip,
)

VSCODE = EDITORS / "vscode"
#: The server's setting types as JSON-schema types in package.json.
JSON_TYPES = {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}
#: Client-only settings (how to start the server): their own section, never sent.
CLIENT_SETTINGS = {"hybridLspClient.serverPath"}


def manifest() -> dict[str, Any]:
    return json.loads((VSCODE / "package.json").read_text())


def contributed_properties() -> dict[str, dict[str, Any]]:
    blocks = manifest()["contributes"]["configuration"]
    props: dict[str, dict[str, Any]] = {}
    for block in blocks if isinstance(blocks, list) else [blocks]:
        props.update(block["properties"])
    return props


def expected_properties() -> dict[str, dict[str, Any]]:
    """package.json's `hybridLsp.*` entries as the server's settings define them."""
    out: dict[str, dict[str, Any]] = {}
    for entry in settings_schema():
        prop: dict[str, Any] = {"type": JSON_TYPES[entry["type"]], "default": entry["default"]}
        if "choices" in entry:
            prop["enum"] = list(entry["choices"])
        for limit in ("minimum", "maximum"):
            if limit in entry:
                prop[limit] = entry[limit]
        prop["description"] = entry["description"]
        out[f"{SECTION}.{entry['key']}"] = prop
    return out


def test_contributed_settings_are_the_servers() -> None:
    props = contributed_properties()
    ours = {k: v for k, v in props.items() if k.startswith(SECTION + ".")}
    expected = expected_properties()
    assert sorted(ours) == sorted(expected), "regenerate with: python -m tests.editors.test_vscode"
    for key, prop in expected.items():
        assert ours[key] == prop, f"{key}: regenerate with: python -m tests.editors.test_vscode"
    assert set(props) - set(ours) == CLIENT_SETTINGS


def test_manifest_activation_and_commands() -> None:
    pkg = manifest()
    assert pkg["activationEvents"] == ["onLanguage:rust"]
    assert pkg["dependencies"]["vscode-languageclient"].lstrip("^~").startswith("9.")
    assert pkg["devDependencies"]["@vscode/vsce"].lstrip("^~").startswith("3.")
    assert pkg["repository"] and pkg["license"] == "MIT" and (VSCODE / "LICENSE").is_file()
    source = (VSCODE / "src" / "extension.ts").read_text()
    registered = set(re.findall(r'registerCommand\("([^"]+)"', source))
    assert {c["command"] for c in pkg["contributes"]["commands"]} == registered
    # launch.ts is shared with npm test, which runs without VS Code.
    assert not re.search(r"""from ["']vscode""", (VSCODE / "src" / "launch.ts").read_text())


def npm(args: list[str], env: dict[str, str], timeout: int) -> str:
    proc = subprocess.run(["npm", *args], cwd=VSCODE, env=env, capture_output=True,
                          text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"npm {' '.join(args)} failed:\n{output[-6000:]}"
    return output


#: Written after `npm ci`: the hash of the package-lock.json it installed.
CI_STAMP = VSCODE / "node_modules" / ".hybrid-lsp-npm-ci"


def lock_hash() -> str:
    return hashlib.sha256((VSCODE / "package-lock.json").read_bytes()).hexdigest()


def npm_ci_once(env: dict[str, str]) -> None:
    """`npm ci`, unless node_modules already holds what package-lock.json says."""
    if CI_STAMP.is_file() and CI_STAMP.read_text() == lock_hash():
        return
    npm(["ci", "--prefer-offline", "--no-audit", "--no-fund"], env, timeout=400)
    CI_STAMP.write_text(lock_hash())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_npm_test_and_package(tmp_path: Path, editor_model: tuple[Path, bool],
                              editor_backend: str) -> None:
    tool_or_skip("node")
    tool_or_skip("npm")
    model, is_default = editor_model
    env = server_env(tmp_path)
    env.update(
        HYBRID_LSP_SERVER=str(server_executable(tmp_path)),
        HYBRID_LSP_TEST_SETTINGS=json.dumps({
            "model": {"backend": editor_backend} if is_default else
                     {"path": str(model), "backend": editor_backend},
            "completion": {"debounceMs": 0, "maxTokens": 16, "latencyBudgetMs": 20000}}),
        npm_config_update_notifier="false",
    )
    if not is_default:
        env["HYBRID_LSP_TEST_EXPECT"] = PREDICTED
    npm_ci_once(env)
    output = npm(["test"], env, timeout=240)
    assert re.search(r"^# fail 0$", output, re.M) and re.search(r"^# pass 3$", output, re.M), \
        output[-3000:]

    vsix = VSCODE / "hybrid-lsp.vsix"
    vsix.unlink(missing_ok=True)
    npm(["run", "package"], env, timeout=240)
    names = set(zipfile.ZipFile(vsix).namelist())
    for needed in ("extension/package.json", "extension/out/extension.js",
                   "extension/out/launch.js", "extension/LICENSE.txt",
                   "extension/node_modules/vscode-languageclient/package.json"):
        assert needed in names, needed
    assert not any(n.startswith(("extension/src/", "extension/out/test/")) for n in names)


if __name__ == "__main__":
    # Print package.json's `hybridLsp.*` properties for the server's current settings.
    print(json.dumps(expected_properties(), indent=2))
