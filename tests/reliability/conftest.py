"""Reliability suite (shared/docs/reliability-notes.md, R-table, CI sizes)."""

from tests.hybrid_lsp.conftest import tiny_model  # noqa: F401  (the model fixture)
