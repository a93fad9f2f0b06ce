"""A C++ extension of the project: built once by setup with torch.utils.cpp_extension (g++, ninja) into a
`build/` folder beside its source, loaded from there at run time without a compiler, rebuilt when its source
or the Python file that defines its flags is newer than the last build."""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence


class Extension:
    """One extension: `load()` gives the module or None (and `unavailable_reason()` says why)."""

    def __init__(self, name: str, source: Path, owner: Path, build_command: str, cflags: Sequence[str],
                 ldflags: Sequence[str] = (), include_dirs: Callable[[], list[str]] | None = None,
                 check: Callable[[ModuleType], ModuleType] | None = None, fallback: str = ""):
        self.name, self.source, self.owner = name, source, owner
        self.build_dir = source.parent / "build"  # gitignored (build/)
        self.library = self.build_dir / f"{name}.so"
        self.stamp = self.build_dir / ".built"  # written after a successful build; setup.sh checks it too
        self.build_command, self.fallback = build_command, fallback
        self.cflags, self.ldflags = list(cflags), list(ldflags)
        self.include_dirs = include_dirs or (lambda: [])
        self.check = check or (lambda module: module)
        self._module: ModuleType | None = None
        self._failure: str | None = None

    def build(self, verbose: bool = False) -> ModuleType:
        """Compile into build_dir (ninja rebuilds only what changed), import, check and stamp it."""
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its import warns of no CUDA
        from torch.utils import cpp_extension

        if shutil.which("ninja") is None:  # torch's builder runs `ninja` from PATH: the venv's (pip's ninja)
            os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
        self.build_dir.mkdir(parents=True, exist_ok=True)
        module = self.check(cpp_extension.load(
            name=self.name, sources=[str(self.source)], extra_cflags=self.cflags, extra_ldflags=self.ldflags,
            extra_include_paths=self.include_dirs(), build_directory=str(self.build_dir), verbose=verbose))
        self.stamp.touch()
        self._module, self._failure = module, None
        return module

    def is_built(self) -> bool:
        return self.library.is_file()

    def up_to_date(self) -> bool:
        """Built, and stamped after the last change of the source and of the file defining its flags."""
        return (self.is_built() and self.stamp.is_file()
                and self.stamp.stat().st_mtime >= max(self.source.stat().st_mtime, self.owner.stat().st_mtime))

    def load(self) -> ModuleType | None:
        """The module if it has been built, else None: the library itself when it is up to date (no compiler
        or ninja needed), otherwise rebuilt first."""
        if self._module is not None or self._failure is not None:
            return self._module
        if not self.is_built():
            self._failure = f"not built: run `{self.build_command}` (or `make setup`) to build {self.source}"
            return None
        try:
            if not self.up_to_date():
                return self.build()
            spec = importlib.util.spec_from_file_location(self.name, self.library)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._module = self.check(module)
            return self._module
        except Exception as err:  # noqa: BLE001 - a broken build falls back to the Python path, saying why
            self._failure = f"{type(err).__name__}: {str(err)[-500:]}"
            warnings.warn(f"{self.source.name} did not load{self.fallback}: {self._failure}", stacklevel=3)
            return None

    def unavailable_reason(self) -> str | None:
        """Why `load()` gives None (None when the module is loaded or not yet asked for)."""
        return self._failure
