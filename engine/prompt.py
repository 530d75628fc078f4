"""The prompt format: the one place that turns a completion request into token ids.

Format version 1 (`PROMPT_FORMAT_VERSION`), stored in the model's GGUF. A request for
file `path` with cursor text `prefix` / `suffix` in repository `repo` with context files
`(p1, t1), (p2, t2), ...` becomes, in suffix-prefix-middle ("spm") order::

    <|repo_name|>{repo}\\n
    <|file_sep|>{p1}\\n{t1}\\n
    <|file_sep|>{p2}\\n{t2}\\n
    ...
    <|file_sep|>{path}\\n
    <|fim_suffix|>{suffix}<|fim_prefix|>{prefix}<|fim_middle|>

and the model continues with the middle, ended by `<|endoftext|>`. In "psm" order the last
line is `<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>`.

Tokenization: each special token is its own id, and each text piece between two special
tokens (`{repo}\\n`, `{p}\\n{t}\\n`, `{path}\\n`, `{suffix}`, `{prefix}`, and in training the
middle) is encoded on its own with `Tokenizer.encode`, so special-token text inside user code
stays text. Empty pieces give no tokens. Because pieces never merge across a special token, a
keystroke at the cursor only changes the tokens of `{prefix}` at the very end of the prompt in
spm order: everything before `<|fim_prefix|>` is unchanged and llama.cpp's KV cache keeps it.
Training (`fim_training_example`, `document_example`) uses the same pieces, so what the model
sees at inference is exactly what it was trained on.

This module must not import torch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.tokenizer import SPECIAL_TOKENS, Tokenizer

PROMPT_FORMAT_VERSION = 1
SUPPORTED_PROMPT_FORMATS = frozenset({1})
FIM_ORDERS = ("spm", "psm")


class UnsupportedPromptFormat(ValueError):
    """A model file whose prompt-format version this engine does not know."""


def check_prompt_format(version: int | None, model_path: str) -> None:
    """Raise `UnsupportedPromptFormat` unless `version` is one this engine can prompt."""
    supported = ", ".join(str(v) for v in sorted(SUPPORTED_PROMPT_FORMATS))
    if version is None:
        raise UnsupportedPromptFormat(
            f"{model_path}: the model declares no prompt-format version; "
            f"this hybrid-lsp supports version {supported}"
        )
    if version not in SUPPORTED_PROMPT_FORMATS:
        raise UnsupportedPromptFormat(
            f"{model_path}: prompt-format version {version} is not supported; "
            f"this hybrid-lsp supports version {supported} "
            "(upgrade hybrid-lsp or use another model)"
        )


def special_token_strings() -> dict[str, str]:
    """Role -> text of every special token (eot, fim_prefix, ..., file_sep, repo_name)."""
    return dict(SPECIAL_TOKENS)


@dataclass(frozen=True)
class ContextFile:
    """A workspace file shown to the model before the current file."""

    path: str
    text: str


@dataclass(frozen=True)
class FimRequest:
    """The current file split at the cursor, plus repository name and context files."""

    path: str
    prefix: str
    suffix: str
    repo_name: str = ""
    context: tuple[ContextFile, ...] = ()


def header_tokens(tok: Tokenizer, repo_name: str, context: tuple[ContextFile, ...]) -> list[int]:
    """`<|repo_name|>{repo}\\n` then `<|file_sep|>{path}\\n{text}\\n` per context file."""
    ids = [tok.repo_name_id, *tok.encode(f"{repo_name}\n")]
    for f in context:
        ids += [tok.file_sep_id, *tok.encode(f"{f.path}\n{f.text}\n")]
    return ids


def file_header_tokens(tok: Tokenizer, path: str) -> list[int]:
    """`<|file_sep|>{path}\\n`, the start of the current file."""
    return [tok.file_sep_id, *tok.encode(f"{path}\n")]


def fim_tokens(tok: Tokenizer, prefix: str, suffix: str, *, order: str = "spm") -> list[int]:
    """The FIM tail ending with `<|fim_middle|>`, in "spm" or "psm" order."""
    pre = [tok.fim_prefix_id, *tok.encode(prefix)]
    suf = [tok.fim_suffix_id, *tok.encode(suffix)]
    if order == "spm":
        return [*suf, *pre, tok.fim_middle_id]
    if order == "psm":
        return [*pre, *suf, tok.fim_middle_id]
    raise ValueError(f"Expected order in {FIM_ORDERS}, got {order!r}")


#: Characters before the cursor that `heal_prefix` tokenizes (the last pre-token is what
#: matters).
HEAL_WINDOW = 200


def heal_prefix(tok: Tokenizer, prefix: str) -> tuple[str, str]:
    """Token healing: (the prefix as the prompt sends it, the text taken off its end).

    A prefix cut at the cursor often ends inside what training always saw as one token:
    `Operat` of `OperationResult`, the trailing space of `let x = ` (the GPT-2 pre-tokenizer
    attaches a space to the next word), the indentation of an empty line. Such an ending is
    rare in training and the model answers with the wrong word, spaces or comments. So the
    last token of the cursor's line comes off the prompt, and the generation must start
    with its text (`GenerationRequest.text_prefix`, a constraint on the first tokens);
    `unheal_completion` takes it off the model's text again. The last token may hold a
    newline (the pre-tokenizer keeps `\n` and the indentation after it in one piece: a
    cursor on an empty indented line ends in `\n` + spaces); nothing is healed when it is
    not whole UTF-8 text. Training prompts are not healed (their cut points are random).
    """
    tail = prefix[-HEAL_WINDOW:]
    if not tail:
        return prefix, ""
    ids = tok.encode(tail)
    if not ids:
        return prefix, ""
    raw = tok.token_bytes(ids[-1])
    try:
        last = raw.decode("utf-8")
    except UnicodeDecodeError:
        return prefix, ""
    if not last or not prefix.endswith(last):
        return prefix, ""
    return prefix[: len(prefix) - len(last)], last


def unheal_completion(completion: str, healed: str) -> str:
    """The model's text for the document when the prompt was healed by `healed` (the
    generation starts with it; the document already has it)."""
    if completion.startswith(healed):
        return completion[len(healed):]
    if healed.startswith(completion):
        return ""  # stopped inside the healed text
    return completion


def build_prompt(tok: Tokenizer, req: FimRequest, *, order: str = "spm") -> list[int]:
    """Token ids of the whole FIM prompt for `req` (see the module docstring)."""
    return [
        *header_tokens(tok, req.repo_name, req.context),
        *file_header_tokens(tok, req.path),
        *fim_tokens(tok, req.prefix, req.suffix, order=order),
    ]


def fim_training_example(
    tok: Tokenizer,
    path: str,
    text: str,
    rng: random.Random,
    *,
    spm_rate: float = 0.5,
    repo_name: str = "",
    context: tuple[ContextFile, ...] = (),
) -> list[int]:
    """A FIM training sequence for one file: `build_prompt(...) + middle + <|endoftext|>`.

    Two cut points are drawn uniformly over the characters of `text` (Bavarian et al. 2022,
    character-level FIM), giving prefix / middle / suffix; the order is "spm" with
    probability `spm_rate`, otherwise "psm". The middle may be empty. The sequence is not
    truncated; the caller cuts it to its context length.
    """
    a, b = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    order = "spm" if rng.random() < spm_rate else "psm"
    req = FimRequest(path, text[:a], text[b:], repo_name, context)
    return [*build_prompt(tok, req, order=order), *tok.encode(text[a:b]), tok.eot_id]


def document_example(
    tok: Tokenizer,
    path: str,
    text: str,
    *,
    repo_name: str = "",
    context: tuple[ContextFile, ...] = (),
) -> list[int]:
    """A plain (left-to-right) training sequence: header, `<|file_sep|>{path}\\n{text}`, eot."""
    return [
        *header_tokens(tok, repo_name, context),
        *file_header_tokens(tok, path),
        *tok.encode(text),
        tok.eot_id,
    ]
