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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


WRITTEN = ".compete-written.json"  # in a folder the user named: the files compete wrote there, as it left them


def _stamp(path: Path) -> list[int]:
    """What a file is, cheaply: a hand edit or another program's write changes its size or time."""
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]


def _written(folder: Path) -> dict:
    try:
        ledger = json.loads((folder / WRITTEN).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return ledger if isinstance(ledger, dict) else {}


def mark_written(*paths: str | Path) -> None:
    """Remember that compete wrote these files (of one folder) as they are now: a later run may replace them."""
    if not paths:
        return
    folder = Path(paths[0]).parent
    with file_lock(folder / f"{WRITTEN}.lock"):  # two submissions into one folder at once keep both marks
        ledger = {name: stamp for name, stamp in _written(folder).items() if (folder / name).is_file()}
        ledger.update({Path(path).name: _stamp(Path(path)) for path in paths})
        atomic_write_json(folder / WRITTEN, ledger)


def written_by_compete(path: Path, ledger: dict | None = None) -> bool:
    """Whether compete wrote `path` and nothing changed it since (mark_written); `ledger`: its
    folder's marks when the caller has read them already."""
    ledger = _written(path.parent) if ledger is None else ledger
    return path.is_file() and ledger.get(path.name) == _stamp(path)


def may_replace(path: str | Path, prefix: bytes | None = None) -> bool:
    """The one rule for a path the user named: compete writes over it only when it is absent,
    empty, marked as compete's own (mark_written), or starts as the file compete writes there
    starts (`prefix`: a leaderboard's title, a PNG's signature). A user's file is never replaced."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return True
    if not path.is_file():
        return False
    if path.stat().st_size == 0 or written_by_compete(path):
        return True
    if prefix is None:
        return False
    with open(path, "rb") as handle:
        return handle.read(len(prefix)) == prefix


def check_replaceable(path: str | Path, what: str, fix: str, prefix: bytes | None = None) -> None:
    """may_replace, as a one-line refusal naming the file and what to do instead."""
    if not may_replace(path, prefix):
        raise CompeteError(
            f"{what} {path} exists and compete did not write it (or it changed since): not replaced; {fix}"
        )


def foreign_files(folder: Path) -> list[str]:
    """What a folder holds that compete did not write there (its own hidden working files aside):
    a folder the user named is written into only when this is empty."""
    if not folder.is_dir():
        return [] if not folder.exists() else [folder.name]
    ledger = _written(folder)  # read once, not once an entry
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if not (entry.name.startswith(WRITTEN) or _working_file(entry.name)) and not written_by_compete(entry, ledger)
    )


def _working_file(name: str) -> bool:
    return name.startswith(".") and (name.endswith(".tmp") or name.endswith(".lock"))


def counted(count: int, noun: str, plural: str = "") -> str:
    """`1 query`, `2 queries`, `3 photos`: a count as a sentence says it."""
    many = plural or (noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s")
    return f"{count:,} {noun if count == 1 else many}"


def printable(text: str) -> str:
    """Text safe to print on a terminal: control characters (an escape sequence in a hostile file
    or class name can retitle the terminal or overwrite lines) shown escaped; line breaks and tabs kept."""
    return "".join(
        c if c in "\n\t" or not unicodedata.category(c).startswith("C") else ascii(c)[1:-1] for c in str(text)
    )


def strict_json(value):
    """`value` with every NaN or infinity as None: strict JSON has neither (a score with no
    queries to average, an objective with nothing to judge)."""
    if isinstance(value, float) and not math.isfinite(value):
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


class Busy(Exception):
    """The lock is held by another process (a non-waiting `_locked`)."""


def _acquire(path: Path, wait: bool) -> int:
    """An exclusive flock on `path`, created if missing. The holder before us may remove the file
    as it releases: a lock on a removed file guards nothing, so we check and lock the new one."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise Busy from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path, wait: bool) -> Iterator[None]:
    """Hold the lock file for the block and remove it after, so no lock file is left behind
    (removed while still locked: a process waiting on it then sees it gone and retries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.name != "posix":  # no flock: filelock's portable lock, whose file stays
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(path), timeout=-1 if wait else 0):
                yield
        except Timeout:
            raise Busy from None
        return
    fd = _acquire(path, wait)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock held for the duration of the block; waits for another holder."""
    with _locked(Path(path), wait=True):
        yield


@contextlib.contextmanager
def exclusive_use(folder: str | Path, what: str, lock_dir: str | Path | None = None) -> Iterator[None]:
    """Hold `folder` (or file) for this process, or fail at once naming the process that holds it
    (two trainings of one run, or two augments of one folder, would overwrite each other). The
    lock file sits beside it, or in `lock_dir`, while it is held, and names its holder."""
    folder = Path(folder)
    where = Path(lock_dir) if lock_dir is not None else folder.parent
    lock_file = where / f".{folder.name}.lock"
    owner_file = where / f".{folder.name}.owner"
    try:
        with _locked(lock_file, wait=False):
            try:
                owner_file.write_text(f"compete (pid {os.getpid()}) since {time.strftime('%H:%M:%S')}\n")
                yield
            finally:
                owner_file.unlink(missing_ok=True)
    except Busy:
        holder = owner_file.read_text().strip() if owner_file.exists() else "another process"
        raise CompeteError(f"{folder} is in use by {holder}; wait for it to finish or stop it") from None


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
