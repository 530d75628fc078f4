"""Kernel tests: without CUDA, Triton runs through its CPU interpreter (set before imports)."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
