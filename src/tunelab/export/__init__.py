"""Exporting a tuned model for other runtimes: GGUF for llama.cpp and Ollama (`tunelab export`)."""
