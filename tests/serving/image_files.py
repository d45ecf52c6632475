"""Small GIF and BMP encoders for tests (TensorFlow decodes these formats but cannot write them)."""

import struct

import numpy as np


def encode_gif(grey):
    """A one-frame GIF of uint8 [H, W] grey pixels (256-grey palette, uncompressed LZW codes)."""
    height, width = grey.shape
    palette = np.repeat(np.arange(256, dtype=np.uint8), 3).tobytes()
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF7, 0, 0) + palette
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    codes = []
    for i, value in enumerate(grey.reshape(-1)):
        if i % 254 == 0:  # a clear code every 254 literals keeps the codes 9 bits wide
            codes.append(256)
        codes.append(int(value))
    codes.append(257)
    packed, bits, nbits = bytearray(), 0, 0
    for code in codes:
        bits |= code << nbits
        nbits += 9
        while nbits >= 8:
            packed.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        packed.append(bits & 0xFF)
    data = bytearray([8])
    for start in range(0, len(packed), 255):
        chunk = packed[start:start + 255]
        data.append(len(chunk))
        data += chunk
    data.append(0)
    return head + descriptor + bytes(data) + b";"


def encode_bmp(rgb):
    """A 24-bit uncompressed BMP of uint8 [H, W, 3] pixels."""
    height, width, _ = rgb.shape
    stride = (width * 3 + 3) & ~3
    rows = bytearray()
    for y in range(height - 1, -1, -1):  # bottom-up, BGR, rows padded to 4 bytes
        line = np.ascontiguousarray(rgb[y, :, ::-1]).tobytes()
        rows += line + b"\0" * (stride - len(line))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(rows), 0, 0, 54) + info + bytes(rows)


def png_header(width, height):
    """The first bytes of a PNG declaring `width` x `height` (a valid signature and IHDR)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0\0\0\0"
