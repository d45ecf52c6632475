"""Reader and writer for the IDX format of (Fashion-)MNIST, gzipped or raw.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a
type code, the number of dimensions ``d``, ``d`` big-endian uint32 sizes,
then the data in C order, big-endian.
"""

import gzip
import os

import numpy as np

_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder(">") if dtype.itemsize > 1 else dtype: code
          for code, dtype in _TYPES.items()}


def _open(path, mode):
    return gzip.open(path, mode) if str(path).endswith(".gz") else open(path, mode)


def read_idx(path):
    """Reads an IDX file (``.gz`` or raw) into a NumPy array.

    Args:
        path: file path; a name ending in ``.gz`` is decompressed.

    Returns:
        np.ndarray with the file's shape; multi-byte types are converted to
        native byte order.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: the file is not a well-formed IDX file.

    Example:
        >>> labels = read_idx("train-labels-idx1-ubyte.gz")  # doctest: +SKIP
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        with _open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"Cannot read IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    if data[2] not in _TYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{data[2]:02x}.")
    dtype, ndim = _TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header.")
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], dtype=">u4"))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX header says shape {shape} ({expected} bytes) but the file "
            f"holds {len(data) - header} data bytes."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path, array):
    """Writes `array` as an IDX file (gzipped when `path` ends in ``.gz``).

    Args:
        path: output path.
        array: NumPy array of uint8, int8, int16, int32, float32 or float64.

    Raises:
        ValueError: the dtype has no IDX type code.
    """
    array = np.asarray(array)
    big = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if big not in _CODES:
        raise ValueError(f"dtype {array.dtype} cannot be stored in an IDX file.")
    header = bytes([0, 0, _CODES[big], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    with _open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=big).tobytes())
