"""LSP protocol surface, CLI and settings of hybrid-lsp."""

__version__ = "0.1.0"
