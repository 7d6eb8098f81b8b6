"""Command-line parsers made from core.lab's config dataclasses (one flag per field: cli/train.py)."""
from __future__ import annotations

import argparse
from dataclasses import fields

__all__ = ["config_parser"]


def config_parser(config_cls, prog: str, description: str | None) -> argparse.ArgumentParser:
    """--field-name for every field of `config_cls`, typed by its default; booleans get --no-X too."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type=type(f.default), default=f.default)
    return p
