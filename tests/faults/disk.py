"""A small ext4 file system on a loop device, for a node whose disk fills up.

The image is a sparse file in the test's tmp dir, formatted without blocks
reserved for root (the nodes run as root, and reserved blocks would leave
them room the test thinks is gone), and mounted with `mount -o loop`.
`fill()` writes filler files until the file system refuses more (ENOSPC),
`free()` deletes them. `unmount()` unmounts and removes the image; the
`loop_disk` fixture calls it at teardown, also when the test failed.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

FILLER_CHUNK_BYTES = 1 << 20
# Filler written after the first ENOSPC, in smaller pieces, so that the
# last few blocks the big chunks could not take are taken too.
FILLER_TAIL_CHUNKS_BYTES = (64 << 10, 4096, 512)
COMMAND_TIMEOUT_S = 30.0


class LoopDisk:
    """An ext4 file system of `size_bytes` in `image`, mounted at `mount`."""

    def __init__(self, image: Path, mount: Path, size_bytes: int):
        self.image = image
        self.mount = mount
        self.size_bytes = size_bytes
        self.fillers: list[Path] = []

    def create(self) -> "LoopDisk":
        """Make the image, format it and mount it; on failure remove what
        was made."""
        self.mount.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as file:
            file.truncate(self.size_bytes)
        try:
            run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)])
            run(["mount", "-o", "loop", str(self.image), str(self.mount)])
        except BaseException:
            self.unmount()
            raise
        return self

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.mount).free

    def fill(self) -> int:
        """Write filler files until the file system is full; returns how
        many bytes they hold. Other writers (a node) may take some of the
        space meanwhile; whatever they free later stays theirs."""
        written = 0
        path = self.mount / f"filler-{len(self.fillers)}"
        self.fillers.append(path)
        # Unbuffered: each write reaches the file system, which answers a
        # short count or ENOSPC when it has no more room.
        with open(path, "wb", buffering=0) as file:
            for chunk_bytes in (FILLER_CHUNK_BYTES, *FILLER_TAIL_CHUNKS_BYTES):
                chunk = b"\xee" * chunk_bytes
                while True:
                    try:
                        count = file.write(chunk)
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            raise
                        break
                    if not count:
                        break
                    written += count
            os.fsync(file.fileno())
        return written

    def free(self) -> None:
        """Delete the filler files: the space returns."""
        for path in self.fillers:
            path.unlink()
        self.fillers.clear()

    def unmount(self) -> None:
        """Unmount (lazily if something still holds a file there) and
        remove the image; safe to repeat."""
        if os.path.ismount(self.mount):
            if subprocess.run(["umount", str(self.mount)], capture_output=True).returncode != 0:
                run(["umount", "-l", str(self.mount)])
        self.image.unlink(missing_ok=True)


class DiskError(AssertionError):
    """mkfs or mount failed."""


def run(argv: list[str]) -> None:
    """Run `argv`; raise DiskError with its stderr on failure."""
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    if completed.returncode != 0:
        raise DiskError(f"`{' '.join(argv)}` failed ({completed.returncode}): {completed.stderr.strip()}")
