"""Writing files: refuse an unwritable output before any work, and never leave a half-written file behind."""

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from .errors import TavError, check, size_text, summary

NAME_MAX = 255  # bytes in one file name on the usual file systems (ext4, APFS, NTFS)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, else it is deleted.

    The temporary name is short (a long final name must not fail only at the end of the work)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=".tmp" + path.suffix[:20], dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` into ``atomic_path``; its own error for a failed write (full disk, no
    permission) becomes the ``OSError`` it wraps, so callers handle every failed write alike."""
    # torch (seconds to import) only once something is saved: the CLI's checks use this module before any model
    from safetensors import SafetensorError
    from safetensors.torch import save_file
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            number = int(code[1])
            raise OSError(number, os.strerror(number), str(path)) from e


def save_or_fallback(save: Callable[[Path], object], path: str | os.PathLike) -> tuple[Path, OSError | None]:
    """``save(path)``; if the disk refuses it (full, read-only), ``save`` into the temp folder instead under a
    free name, so the work is never lost to a failed write. Returns where it went and the first write's error
    (None if it went to ``path``); raises that error, naming both places, when neither takes it."""
    path = Path(path)
    try:
        save(path)
        return path, None
    except OSError as first:
        fallback = _free_name(Path(tempfile.gettempdir()) / path.name)
        try:
            save(fallback)
        except OSError as second:
            raise OSError(first.errno, f"{first.strerror or first}; not even the temp folder {fallback.parent} took "
                                       f"it ({second.strerror or second})", str(path)) from first
        return fallback, first


def _free_name(path: Path) -> Path:
    """``path``, or ``name-1.ext``, ``name-2.ext``...: a name nothing has yet (a fallback never overwrites)."""
    stem, suffix, n = path.name.split(".")[0], "".join(path.suffixes), 0
    while path.exists():
        n += 1
        path = path.with_name(f"{stem}-{n}{suffix}")
    return path


def is_file(path: str | os.PathLike) -> bool:
    """``Path.is_file``, but a name too long for the file system is simply not there (instead of an error)."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """Refuse an output that cannot be written, before the work that produces it: a folder where a file goes (or
    the reverse), a path under a file, a read-only place, a name too long."""
    path = Path(path)
    if path.exists():
        check(path.is_dir() == folder, f"{what} {path} is {'a file' if folder else 'a folder'}; give "
                                       f"{'a folder path' if folder else 'a file name'} or another path")
    check(len(path.name.encode()) <= NAME_MAX,
          f"{what} name {path.name[:40]}... is {len(path.name.encode())} bytes, over the {NAME_MAX} a file name may "
          "have; choose a shorter name")
    place = _existing_ancestor(path.parent)
    check(place.is_dir(), f"cannot write {what} {path}: {place} is a file, not a folder; choose another path")
    check(os.access(place, os.W_OK | os.X_OK), f"cannot write {what} {path}: {place} is not writable; choose "
                                               "a writable folder")
    return path


def check_free_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse before the work when the disk that ``path`` goes to cannot hold ``needed`` bytes."""
    free = shutil.disk_usage(_existing_ancestor(Path(path).parent)).free
    check(free >= needed, f"{what} needs about {size_text(needed)} at {path}, but only {size_text(free)} are free "
                          "there; free disk space or choose another place")


def read_header(path: str | os.PathLike, fix: str, name: str | None = None) -> dict:
    """A safetensors file's metadata without reading its tensors; an unreadable file is refused in one line."""
    from safetensors import safe_open  # (imports torch) only when a file is read: the CLI's checks stay light
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except Exception as e:
        raise TavError(f"{name or path} cannot be read ({summary(e, 1)}); it is not a safetensors file or it is "
                       f"truncated: {fix}") from e


def parsed_metadata(meta: dict, path, fix: str, keep_text: tuple = ("format",)) -> dict:
    """Metadata values as written (JSON, except ``keep_text``); a value that is not JSON is refused naming it."""
    out = {}
    for key, value in meta.items():
        if key in keep_text:
            out[key] = value
            continue
        try:
            out[key] = json.loads(value)
        except ValueError:
            raise TavError(f"{path}: its metadata entry {key!r} is damaged (not JSON): {fix}") from None
    return out


def read_safetensors(path: str | os.PathLike, fix: str, name: str | None = None) -> tuple[dict, dict]:
    """(metadata, tensors) of a safetensors file; one that cannot be read (truncated, not safetensors) is refused
    in one line ending with ``fix``. ``name``: how the message calls the file (default its path)."""
    from safetensors import safe_open  # (imports torch) only when a file is read: the CLI's checks stay light
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise TavError(f"{name or path} cannot be read ({type(e).__name__}); it may be truncated: {fix}") from e


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot), so that a lock of a dead run whose number was
    given to a new process is still seen as stale; None where that cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_alive(holder: dict) -> bool:
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    start = _process_start(pid)
    return start is None or holder.get("start") in (None, start)


def _lock_name(name: str) -> str:
    """``<name>.lock``; for a name too long for that, its start and a digest of the whole (still one per output)."""
    if len((name + ".lock").encode()) <= NAME_MAX:
        return name + ".lock"
    return f"{name[:50]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}.lock"


@contextmanager
def output_lock(path: str | os.PathLike, name: str):
    """Own ``path`` (and the files named after it: training state, loss curve) for this run: ``<path>.lock`` holds
    this process's id. A second run writing the same output is refused at once, naming the first; the lock of a
    run that crashed or was killed (its process gone) is taken over."""
    path = Path(path)
    lock = path.with_name(_lock_name(path.name))
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "start": _process_start(os.getpid()), "command": " ".join(sys.argv[1:])[:500]}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}
            if isinstance(holder, dict) and holder.get("pid") == me["pid"] and holder.get("start") == me["start"]:
                raise TavError(f"{name} {path} is also another output of this command; give each output its own "
                               "path") from None
            if isinstance(holder, dict) and _holder_alive(holder):
                raise TavError(f"{name} {path} is being written by another run (process {holder['pid']}: "
                               f"{holder.get('command') or '?'}); wait for it to end, or give another {name}") from None
            lock.unlink(missing_ok=True)  # its run is gone: take it over
    else:
        raise TavError(f"{name} {path}: another run took its lock {lock} at the same moment; try again")
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        yield lock
    finally:
        try:
            if json.loads(lock.read_text()).get("pid") == me["pid"]:
                lock.unlink()
        except (OSError, ValueError):
            pass
