"""Package attributes imported on first use (PEP 562), so that importing a package for one light
module (e.g. `python -m core --help`, `import core.errors`) does not pull in torch."""
from __future__ import annotations

from importlib import import_module
from typing import Callable

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module-level __getattr__ for `package`: name -> the relative module that defines it.
    The value is cached in the package's namespace after the first look-up."""
    namespace = import_module(package).__dict__

    def __getattr__(name: str):
        if name in table:
            value = getattr(import_module(table[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
