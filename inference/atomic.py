"""Files that are never half-written: every writer of the project writes under a temporary name beside the final
file and renames it when complete (one `os.replace`, atomic within a file system). A reader, a resumed run or the
organizers' scorer sees either the old file, or no file, or the whole new one.

`atomic_path` is the one place that does this; the small writers below cover text, JSON, bytes and copies.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def temporary_name(path: Path) -> Path:
    """A hidden name beside `path` that keeps its full suffix (".nii.gz", ".png", ...), so writers that choose
    the format from the file name still do; the process id keeps parallel writers apart."""
    path = Path(path)
    return path.with_name(f".partial-{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path: Path, mkdir: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write `path` through: renamed to `path` when the block ends, removed when it
    raises (the old `path`, if any, is then left as it was)."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json(path: Path) -> Any:
    """The JSON a writer here left at `path`, or None when there is none or it cannot be read (a record from a run
    that was stopped, or of another format: the caller redoes that work)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_text(path: Path, text: str, mkdir: bool = False) -> Path:
    with atomic_path(path, mkdir) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, data: Any, indent: int | None = 2, mkdir: bool = False, **dumps: Any) -> Path:
    """`data` as JSON with a final newline."""
    return write_text(path, json.dumps(data, indent=indent, **dumps) + "\n", mkdir)


def copy_file(src: Path, dst: Path, mkdir: bool = False) -> Path:
    with atomic_path(dst, mkdir) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dst)


def write_csv(path: Path, header, rows, mkdir: bool = False) -> Path:
    """A CSV file: the header line, then one line per row."""
    import csv

    with atomic_path(path, mkdir) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return Path(path)
