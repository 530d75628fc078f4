"""Training data: the Debian Rust corpus and its stages."""
