"""Profiles as small override files: `"extends": "NAME"` starts from another profile and changes only the keys
given (nested dictionaries merge key by key; lists and values replace), so a file shows what differs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on top (a new dictionary; nested dictionaries merged, everything else replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def find_profile(name_or_path: str, folder: Path, builtin: Path) -> Path:
    """A profile file: a path as given, or a name looked up beside `folder` first, then in `builtin`."""
    p = Path(name_or_path)
    if not p.suffix:
        p = folder / f"{name_or_path}.json"
        if not p.is_file():
            p = builtin / f"{name_or_path}.json"
    if not p.is_file():
        names = sorted(x.stem for x in builtin.glob("*.json"))
        raise FileNotFoundError(f"{p}: no such profile (built-in: {names})")
    return p


def read_profile(path: Path, builtin: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The JSON of the profile at `path` with its `extends` chain resolved (a loop is an error)."""
    path = Path(path)
    if path.resolve() in seen:
        raise ValueError(f"{path}: 'extends' loops back ({' -> '.join(p.name for p in seen)})")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    parent = d.pop("extends", None)
    if parent is None:
        return d
    return merge(read_profile(find_profile(parent, path.parent, builtin), builtin, seen + (path.resolve(),)), d)
