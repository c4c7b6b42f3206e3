"""Reading files that someone else may have put in place: cache entries and an export's files.

Input: a path (or a name inside an open folder, `dir_fd`) and a size cap. Output: the file's
bytes, or an error saying why it was refused (`ValueError`) or could not be opened (`OSError`).
Invariants: only a regular file is read: a FIFO, device, socket or directory is refused without
blocking (the open is non-blocking and the type is checked on the descriptor, not the path); a
file larger than the cap is refused before anything is read, so neither a hostile nor a damaged
file can hang the process or exhaust its memory; the bytes returned are exactly the size the
descriptor had when checked (a file that grows or shrinks meanwhile is refused).
"""
from __future__ import annotations

import os
import stat

MAX_BYTES = 256 << 20  # a compiled program is KBs to MBs


def read_regular(path: str, cap: int = MAX_BYTES, *, dir_fd: int | None = None,
                 follow: bool = True, owner: int | None = None) -> bytes:
    """The bytes of the regular file at `path`; with `follow=False` a symlink is refused, with
    `owner` a file owned by another uid is."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        if owner is not None and st.st_uid != owner:
            raise ValueError(f"is owned by uid {st.st_uid}, not by uid {owner}")
        if st.st_size > cap:
            raise ValueError(f"holds {st.st_size} bytes, more than the {cap} allowed")
        with open(fd, "rb", closefd=False) as f:
            data = f.read(st.st_size + 1)
    finally:
        os.close(fd)
    if len(data) != st.st_size:
        raise ValueError("changed while it was read")
    return data
