"""Models: loading (Auto classes, architectures, devices, offline checks), the offline aliases, precision.

Names load on first use (PEP 562): the alias registry must not import torch (loading does)."""

from tunelab.lazy import lazy_exports

_LAZY = {
    "LoadedModel": "loading",
    "ModelSource": "loading",
    "detect_arch": "loading",
    "load_model": "loading",
    "pick_device": "loading",
    "pick_dtype": "loading",
    "resolve_source": "loading",
    "ALIASES": "registry",
    "alias_dir": "registry",
    "is_pulled": "registry",
    "pull_model": "registry",
}

__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = sorted(_LAZY)
