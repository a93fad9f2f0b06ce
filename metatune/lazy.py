"""Package attributes imported on first use (PEP 562), so importing a package (the CLI registering its
verbs, `metatune --help`) costs no torch import."""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def install_lazy_attributes(package: str, names: dict[str, str]) -> None:
    """Make each of `names` (attribute -> defining module) an attribute of `package` imported when first read.

    A function named like its module (`metatune.solve` defines `solve`) stays the function even after the
    module itself is imported: Python binds a submodule onto its package on import, which would otherwise
    shadow the function; the package's class redirects that binding to the function."""
    module = sys.modules[package]

    class _LazyPackage(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name in names:
                value = getattr(importlib.import_module(names[name]), name)
                types.ModuleType.__setattr__(self, name, value)
                return value
            raise AttributeError(f"module {package!r} has no attribute {name!r}")

        def __setattr__(self, name: str, value: Any) -> None:
            if name in names and isinstance(value, types.ModuleType) and value.__name__ == names[name]:
                value = getattr(value, name)  # the submodule `solve` binding itself: keep the function
            types.ModuleType.__setattr__(self, name, value)

        def __dir__(self) -> list[str]:
            return sorted({*module.__dict__, *names})

    module.__class__ = _LazyPackage
