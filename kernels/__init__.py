"""Triton attention kernels and their pure-torch references (imports torch and triton only)."""
