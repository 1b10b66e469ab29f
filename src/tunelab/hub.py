"""The Hugging Face hub, asked once and quickly: is it reachable from here, is a model already cached.
Code that would otherwise fall back to the hub (models, datasets, benchmark tasks) fails at once with a clear
message when it is not, instead of after minutes of retries inside the hub client."""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be reached: False at once in offline mode (HF_HUB_OFFLINE) or when a
    connection to its host fails within `timeout` seconds (instead of minutes of retries inside the hub client)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ).lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)  # name resolution itself has no timeout
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def in_hub_cache(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    except Exception:  # an id the cache cannot even parse
        return False
