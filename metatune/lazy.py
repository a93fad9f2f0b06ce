"""Package attributes imported on first use (PEP 562), so importing a package (the CLI registering its
verbs, `metatune --help`) costs no torch import."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, names: dict[str, str], namespace: dict[str, Any]
                    ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: each of `names` (attribute -> defining module) is imported
    when first read, then cached in the package's `namespace`."""
    def getattr_(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted([*namespace, *names])

    return getattr_, dir_
