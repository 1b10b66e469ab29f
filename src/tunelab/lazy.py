"""Names a package exports without importing them until first use (PEP 562), so light commands stay light."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `names[name]` (a submodule of `package`, or an absolute module path)
    on first access and returns its attribute `name`. A lazily exported name must not equal a submodule's
    name: importing that submodule would set the package attribute to the module itself."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = names[name] if names[name].startswith("tunelab.") else f"{package}.{names[name]}"
        return getattr(import_module(module), name)

    return __getattr__
