"""Reading the files telemon is pointed at: regular files only, and never more than a bound.

Config, rules, cohorts, scenario and mapping files, signing keys, snapshots and registry entries
are all read through :func:`read_bytes`. A FIFO, a device (``/dev/zero``), a socket or a directory
at one of those paths is refused at once, without blocking (the file is opened non-blocking and
checked with ``fstat`` before anything is read), and so is a file larger than the caller's bound.

>>> import os, tempfile
>>> d = tempfile.mkdtemp()
>>> os.mkfifo(f"{d}/fifo")
>>> read_bytes(Path(f"{d}/fifo"), 1024)
Traceback (most recent call last):
...
monitor.errors.UnsafeFileError: ...fifo: not a regular file (a FIFO)
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from monitor.errors import UnsafeFileError

#: Bounds for the files people write: a monitor config, a rules file, a scenario, a mapping.
MAX_CONFIG_BYTES = 1 << 20
#: A signing key file holds a few dozen bytes.
MAX_KEY_BYTES = 4096

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def check_regular(path: Path, mode: int) -> None:
    """Raise :class:`UnsafeFileError` unless ``mode`` (of ``path``) is a regular file's."""
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    raise UnsafeFileError(f"{path}: not a regular file ({kind})")


def read_bytes(path: Path, max_bytes: int | None, offset: int = 0) -> bytes:
    """The content of the regular file at ``path`` from byte ``offset`` on (at most
    ``max_bytes``; ``None``: no bound).

    Raises :class:`FileNotFoundError` and the other ``OSError`` of opening it, and
    :class:`UnsafeFileError` for anything but a regular file or a file over the bound.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        check_regular(path, st.st_mode)
        if max_bytes is not None and st.st_size - offset > max_bytes:
            raise UnsafeFileError(f"{path}: {st.st_size:,} bytes, over the limit of {max_bytes:,}")
        os.lseek(fd, offset, os.SEEK_SET)
        limit = max(st.st_size - offset, 0) + 1 if max_bytes is None else max_bytes + 1
        chunks, size = [], 0
        while chunk := os.read(fd, max(limit - size, 1 << 16)):
            chunks.append(chunk)
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise UnsafeFileError(f"{path}: grew over the limit of {max_bytes:,} bytes while read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_append(path: Path) -> BinaryIO:
    """``path`` opened for appending (created 0600 if missing), refused unless a regular file."""
    with contextlib.suppress(FileNotFoundError):  # a FIFO without a reader would not even open
        check_regular(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    try:
        check_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "ab")


def read_text(path: Path, max_bytes: int | None = MAX_CONFIG_BYTES) -> str:
    """:func:`read_bytes` decoded as UTF-8 (``UnicodeDecodeError`` if it is not)."""
    return read_bytes(path, max_bytes).decode("utf-8")
