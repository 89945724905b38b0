"""Compressed test bodies that would take seconds to build by compressing every byte."""

from __future__ import annotations

import struct
import zlib

MiB = 1024 * 1024


def gzip_zeros(mib: int) -> bytes:
    """Return `mib` MiB of zeros as one gzip member, built without compressing them all.

    After a full flush the compressor starts from an empty window, so each
    further MiB of zeros compresses to the same bytes, and the trailer's
    CRC-32 is computed separately. 1024 MiB take about 1 MB.
    """
    zeros = bytes(MiB)
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    repeated = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    end = deflater.flush(zlib.Z_FINISH)[:-8]  # the final empty block, without the trailer
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, (mib * MiB) & 0xFFFFFFFF)
    return first + repeated * (mib - 1) + end + trailer
