"""Workspace index and context assembly (imports nothing of ours)."""
