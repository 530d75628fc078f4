"""Tokenizer, model, GGUF I/O, backends, generation and training."""
