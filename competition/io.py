"""Atomic writes and file locks: a killed process never leaves a half-written file, and two
processes never write one folder at once. Locks use the `filelock` package (it works on
Windows too, and the OS releases a lock when its process dies)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import stat
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Iterator

from competition.errors import CompeteError, DiskFull

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_writable(target: Path) -> None:
    """A read-only file is refused: renaming a new file over it would bypass its mode."""
    if target.exists() and not target.stat().st_mode & stat.S_IWUSR:
        raise CompeteError(f"{target}: the file is read-only; not replaced")


def is_disk_full(error: OSError) -> bool:
    """No space or quota left; numpy's short write says so only in words ('N requested and M written')."""
    return error.errno in (errno.ENOSPC, errno.EDQUOT) or ("requested and" in str(error) and "written" in str(error))


def _disk_full(target: Path, error: OSError) -> DiskFull:
    return DiskFull(f"disk full: cannot write {target} ({error.strerror or error}); free some space and re-run")


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success. A full
    disk becomes DiskFull naming `target` (numpy and PIL name no file, or a temporary one)."""
    target = Path(target)
    ensure_writable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # the name cut short: a target name at the file system's limit must still get a temporary one
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        if is_disk_full(error):
            raise _disk_full(target, error) from error
        raise
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the result should be an ordinary file
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as error:
        if is_disk_full(error):
            raise _disk_full(target, error) from error
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_plain_name(name: str, what: str, folder_flag: str) -> None:
    """A name that becomes one file or folder and a leaderboard cell: not a path, and no control
    character (a line break in a name would break leaderboard.md for good)."""
    if Path(name).name != name or name in (".", ".."):
        raise CompeteError(f"{what} '{name}' must be a plain name, not a path (use {folder_flag} for the folder)")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise CompeteError(f"{what} {name!r} holds a control character (a line break, a tab...): use a plain name")


def strict_json(value):
    """`value` with every NaN as None: strict JSON has no NaN (a score with no queries to average)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def json_text(data: object, indent: int | None = None) -> str:
    """Strict JSON (NaN as null), keys sorted, anything else as its string."""
    return json.dumps(strict_json(data), indent=indent, sort_keys=True, default=str, allow_nan=False)


def atomic_write_json(target: str | Path, data: object) -> None:
    atomic_write_text(target, json_text(data, indent=2) + "\n")


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock held for the duration of the block; waits for another holder."""
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


@contextlib.contextmanager
def exclusive_use(folder: str | Path, what: str, lock_dir: str | Path | None = None) -> Iterator[None]:
    """Hold `folder` (or file) for this process, or fail at once naming the process that holds it
    (two trainings of one run, or two augments of one folder, would overwrite each other). The
    lock files sit beside it, or in `lock_dir` (to keep a folder the user reads free of them)."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    where = Path(lock_dir) if lock_dir is not None else folder.parent
    lock_file = where / f".{folder.name}.lock"
    owner_file = where / f".{folder.name}.owner"
    where.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = owner_file.read_text().strip() if owner_file.exists() else "another process"
        raise CompeteError(f"{folder} is in use by {holder}; wait for it to finish or stop it") from None
    try:
        owner_file.write_text(f"compete (pid {os.getpid()}) since {time.strftime('%H:%M:%S')}\n")
        yield
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()


def sha256_of_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(items: list[str]) -> str:
    """A short stable hash of a list of strings (file lists, configs) for cache keys."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def read_jsonl(path: str | Path) -> list[dict]:
    """The objects of a JSON-lines file; a damaged line (a disk filled mid-write, a kill, a hand
    edit) is skipped and named in a warning."""
    path = Path(path)
    if not path.exists():
        return []
    records, bad = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(str(number))
    if bad:
        log.warning("%s: skipped %d damaged line(s): %s", path, len(bad), ", ".join(bad[:10]))
    return records
