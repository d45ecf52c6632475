"""Image dimensions read from the file header, without decoding (the pixel limit's check).

A 389 KB PNG may declare 20000 x 20000 pixels and decode to gigabytes; the
server reads ``width x height`` from the header of every encoded image
(microseconds, no allocation) and refuses an image over the pixel limit
before TensorFlow decodes it. Formats: PNG (IHDR), JPEG (the first SOFn
segment), GIF (logical screen and every image descriptor up to the first
frame), BMP (BITMAPCOREHEADER / BITMAPINFOHEADER and later) and WebP
(VP8, VP8L, VP8X).

Example:
    >>> image_size(tf.io.encode_png(tf.zeros([4, 5, 1], tf.uint8)).numpy())  # doctest: +SKIP
    ('png', 5, 4)
"""

import struct

_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_SCAN_LIMIT = 1 << 20  # a SOF after 1 MiB of metadata is not a real camera file


def _png(data):
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError("truncated PNG header")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg(data):
    pos = 2
    limit = min(len(data), _JPEG_SCAN_LIMIT)
    while pos + 4 <= limit:
        if data[pos] != 0xFF:
            raise ValueError(f"bad JPEG marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker in _SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:  # end of image / start of scan before a SOF
            raise ValueError("JPEG without a frame header")
        pos += 2 + length
    raise ValueError("no JPEG frame header in the first bytes")


def _gif(data):
    if len(data) < 13:
        raise ValueError("truncated GIF header")
    width, height, flags = struct.unpack("<HHB", data[6:11])
    # TensorFlow's decoder sizes the canvas by the largest of the screen and the frames;
    # check the descriptors up to the first frame (what is decoded).
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x2C:  # image descriptor
            if pos + 10 > len(data):
                break
            left, top, w, h = struct.unpack("<HHHH", data[pos + 1:pos + 9])
            return max(width, left + w), max(height, top + h)
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
            while pos < len(data) and data[pos]:
                pos += data[pos] + 1
            pos += 1
            continue
        break
    return width, height


def _bmp(data):
    if len(data) < 26:
        raise ValueError("truncated BMP header")
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(width), abs(height)


def _webp(data):
    chunk = data[12:16]
    if len(data) < (25 if chunk == b"VP8L" else 30):
        raise ValueError("truncated WebP header")
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1,
                int.from_bytes(data[27:30], "little") + 1)
    raise ValueError(f"unknown WebP chunk {chunk!r}")


def image_format(data):
    """``'png' | 'jpeg' | 'gif' | 'bmp' | 'webp'`` from the magic bytes, or None."""
    if data.startswith(_PNG):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM"):
        return "bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


_READERS = {"png": _png, "jpeg": _jpeg, "gif": _gif, "bmp": _bmp, "webp": _webp}


def image_size(data):
    """``(format, width, height)`` from an encoded image's header.

    Raises:
        ValueError: not one of the formats, or a header too short to read.
    """
    kind = image_format(data)
    if kind is None:
        raise ValueError("not a JPEG, PNG, GIF, BMP or WebP image")
    width, height = _READERS[kind](data)
    return kind, width, height
