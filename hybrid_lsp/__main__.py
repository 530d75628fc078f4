"""`python -m hybrid_lsp`: the same entry point as the `hybrid-lsp` script."""

from hybrid_lsp.cli import main

raise SystemExit(main())
