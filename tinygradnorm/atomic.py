"""Files written whole or not at all: a temporary file beside the target, renamed into place.

Readers see the old file or the new one, never half of one. The temporary file is created with
``open()``'s mode under the current umask (0644 under umask 022), so the file that replaces the
target gets the mode a plain ``open()`` would have given it.

A writer killed mid-write (SIGKILL included) leaves its temporary file behind. While it writes,
the writer holds an exclusive lock (``flock``) on the file, and the kernel drops the lock when the
process dies. So the next writer into the same directory can tell a dead writer's file (it can
take the lock) from a live one's (it cannot), and removes only the dead ones: several writers
may share a directory safely. Without ``fcntl`` (Windows), leftovers older than a day are removed.
"""
import contextlib
import os
import secrets
import time

try:
    import fcntl
except ImportError:         # pragma: no cover  (Windows)
    fcntl = None

STALE_AFTER_SECONDS = 24 * 3600   # without locks: how old a leftover must be to count as a dead writer's


def remove_stale(directory, prefix):
    """Remove the temporary files named ``prefix*`` in directory whose writers are gone; returns their names."""
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for name in names:
        if name.startswith(prefix) and _take_if_abandoned(os.path.join(directory, name)):
            removed.append(name)
    return removed


def _take_if_abandoned(path):
    """Unlink path if no live writer holds its lock. True if it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:                 # gone already, or not ours to read
        return False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:         # a live writer holds it
                return False
        elif time.time() - os.fstat(fd).st_mtime < STALE_AFTER_SECONDS:
            return False
        try:
            # NOTE: unlink only the file that was locked: the name must still refer to it.
            if not os.path.samestat(os.fstat(fd), os.stat(path)):
                return False
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, prefix=".tmp-", check=None):
    """Write path through a locked temporary file: ``with atomic_write(p) as f: f.write(b"...")``.

    The binary file yielded (open for reading too) is renamed over path when the block ends without an exception, after
    ``check(temporary_path)`` (which may raise to refuse the content). On an exception the temporary
    file is removed and path is untouched. Stale temporary files of dead writers are removed first.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale(directory, prefix)
    fd, tmp = _create_locked(directory, prefix, os.path.basename(path))
    try:
        with os.fdopen(fd, "w+b") as f:             # the lock goes with the descriptor, after the rename
            yield f
            f.flush()
            os.fsync(f.fileno())
            if check is not None:
                check(tmp)
            os.replace(tmp, path)
        _fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _create_locked(directory, prefix, name):
    """(fd, path) of a new file, created with open()'s mode under the umask and locked before anyone can take it."""
    while True:
        tmp = os.path.join(directory, f"{prefix}{secrets.token_hex(6)}-{name}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        if fcntl is None:
            return fd, tmp
        fcntl.flock(fd, fcntl.LOCK_EX)
        # NOTE: between the create and the lock, another writer's cleanup may have taken this file (it was
        # not locked yet) and unlinked it; then the name is gone, and the next name is tried.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def _fsync_directory(directory):
    """Make the rename itself durable (where the platform allows opening a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:             # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:             # pragma: no cover
        pass
    finally:
        os.close(fd)
