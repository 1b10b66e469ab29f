"""Serving: one base model with many task adapters (and full fine-tuning runs as models of their own) behind an
OpenAI-compatible HTTP API, with batching across adapters and a playground page. See `tunelab serve --help`."""
