"""The one resume rule of every trainer and preparing step in this tree.

A run folder records the settings it was made with (`settings.json`). Run again with the same settings, an
interrupted run resumes and a finished one is kept; with other settings the folder is removed and the work starts
again from scratch, and the run says so (on stderr, naming the settings that changed). A folder from before
settings were recorded is adopted as made with the settings given.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from inference.atomic import read_json, write_json

SETTINGS_FILE = "settings.json"


def normalised(settings: dict) -> dict:
    """`settings` as JSON reads them back (tuples become lists, paths strings)."""
    return json.loads(json.dumps(settings, default=str))


def changed_keys(recorded: dict, settings: dict) -> list[str]:
    """The top-level keys whose values differ (added and removed keys included)."""
    return sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))


def say_restart(where: Path | str, keys: list[str]) -> None:
    print(f"{where}: made with other settings ({', '.join(keys) or 'unknown'}); training again from scratch",
          file=sys.stderr)


def claim(out: Path, settings: dict, done: str | None = None) -> bool:
    """Make the run folder `out` one of `settings` (removing one of other settings, saying so) and record them;
    True while its work is still to do: `done` (a file under `out` that the finished work leaves) is missing, or
    always when `done` is None (the caller resumes or skips by its own files)."""
    out = Path(out)
    settings = normalised(settings)
    file = out / SETTINGS_FILE
    recorded = read_json(file)
    if isinstance(recorded, dict) and recorded != settings:
        say_restart(out, changed_keys(recorded, settings))
        shutil.rmtree(out)
    if not file.is_file():
        write_json(file, settings, mkdir=True)
    return done is None or not (out / done).exists()
