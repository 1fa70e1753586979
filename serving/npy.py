"""Reading an uploaded .npy file: never unpickled, its size checked against its header before allocating."""

from __future__ import annotations

import io
import math
import re

import numpy as np

from .asgi import echo
from .errors import BadInput

_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_npy(data: bytes) -> np.ndarray:
    """The array in `data`, uint8 or float32 only; anything else is refused with a reason.

    np.load on a file-like object allocates whatever shape the header claims before reading, so a
    40-byte upload could ask for terabytes. Here the header is read first, the byte count must match
    it exactly, and the pixels are viewed in place (no copy, no pickle, no object arrays).
    """
    if not data:
        raise BadInput("empty upload: expected a .npy file")
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in _READERS:
            raise ValueError(f".npy format version {version} is not supported; save with numpy.save")
        shape, fortran_order, dtype = _READERS[version](stream)
    except Exception as err:  # numpy's parser raises ValueError, SyntaxError, tokenize.TokenError, RecursionError
        raise BadInput(f"not a readable .npy file: {_without_addresses(err)}") from None
    if not all(type(d) is int for d in shape):  # the header reader lets (True, 28) and the like through
        raise BadInput(f"the .npy header's shape {echo(str(shape))} is not a tuple of whole numbers")
    if any(d < 0 for d in shape):  # numpy's header reader lets (-1, -1, 28, 28) through
        raise BadInput(f"the .npy header's shape {shape} has a negative dimension")
    if dtype.hasobject or dtype.fields is not None:
        raise BadInput(f"dtype {dtype} refused: send plain uint8 or float32 numbers")
    if dtype.str not in ("|u1", "<f4", ">f4"):
        raise BadInput(f"dtype {dtype} refused: send uint8 (0-255) or float32 (0-1) pixels")
    count = math.prod(shape)
    if len(data) - stream.tell() != count * dtype.itemsize:
        raise BadInput(f"the .npy header says shape {shape} of {dtype} ({count * dtype.itemsize} bytes) but "
                       f"{len(data) - stream.tell()} bytes follow it: the file is truncated or padded")
    try:  # numpy's own limits: at most 64 dimensions, and a size that fits an index even with no elements
        flat = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
        return flat.reshape(shape, order="F" if fortran_order else "C")
    except ValueError as err:
        raise BadInput(f"the .npy header's shape {shape} cannot be an array: {err}") from None


def _without_addresses(err: Exception) -> str:
    """numpy's message, cut, without the memory addresses its header parser quotes ("<ast.Call object at 0x7f...>")."""
    return echo(re.sub(r" object at 0x[0-9a-fA-F]+", " object", str(err)))
