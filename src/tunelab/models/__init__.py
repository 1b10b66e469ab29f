"""Models: loading (Auto classes, architectures, devices, offline checks), the offline aliases, precision.

Names load on first use (PEP 562): the alias registry must not import torch (loading does)."""

from importlib import import_module as _import_module

_LAZY = {
    "LoadedModel": "loading", "ModelSource": "loading", "detect_arch": "loading", "load_model": "loading",
    "pick_device": "loading", "pick_dtype": "loading", "resolve_source": "loading",
    "ALIASES": "registry", "alias_dir": "registry", "is_pulled": "registry", "pull_model": "registry",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_import_module(f"tunelab.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tunelab.models' has no attribute {name!r}")


__all__ = sorted(_LAZY)
