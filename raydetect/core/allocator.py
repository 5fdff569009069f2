"""Keeping freed memory in the process, so that CPU forward passes do not fault it in afresh.

glibc's malloc hands a large block (above its mmap threshold) back to the kernel when
it is freed, and trims free memory off the top of the heap once it exceeds the trim
threshold. A CPU forward pass allocates its layer outputs anew each call (R-Net over
512 crops: about 28 MB for the first layer's output alone), so a pass can touch fresh
pages and pay a page fault for every 4 KiB of them. glibc adapts its thresholds to the
blocks freed so far, so a detect call, which mixes pass sizes, kept paying it; with the
thresholds raised here it does not (``tests/test_allocator.py`` counts the faults of the
R-Net case; the time it saves is in docs/benchmarks.md, Pass sizes).

The price is resident memory: up to :data:`TRIM_THRESHOLD_BYTES` of free heap stays
mapped after a burst. The setting is process-wide, which is why :class:`FaceDetector`
applies it only for CPU devices, and why ``RAYDETECT_MALLOC_TUNING=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Blocks below this are served from the heap; 32 MiB is the largest value glibc accepts on 64-bit.
MMAP_THRESHOLD_BYTES = 32 * 2**20
# Free memory kept at the top of the heap before it is returned to the kernel.
TRIM_THRESHOLD_BYTES = 256 * 2**20

OPT_OUT_VARIABLE = "RAYDETECT_MALLOC_TUNING"


@functools.cache
def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once.

    Does nothing (and returns False) when ``RAYDETECT_MALLOC_TUNING=0``, when the
    process is not on Linux with glibc, or when the thresholds were set through glibc's
    own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` variables (the user's
    choice wins).

    Returns:
        Whether the thresholds set here are in effect.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success, 0 when glibc refuses the value.
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # only glibc has it (musl does not)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc
