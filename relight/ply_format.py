"""Read any PLY's elements: ASCII, binary little- or big-endian, every scalar type, list properties.

What 3DGS, COLMAP and mesh tools write: `points3d.ply` with double or float x, y, z and uchar colours,
3DGS files with dozens of float properties, meshes with a face list after the vertices.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from metatune.errors import MetatuneError

TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
         "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
         "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}

# element: (name, count, [(property, type, list count type or None)])
Element = tuple[str, int, list[tuple[str, str, str | None]]]


def _header(path: Path, raw: bytes) -> tuple[str, list[Element], int]:
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise MetatuneError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    body_start = raw.index(b"\n", end) + 1
    fmt, elements = None, []
    for line in raw[:end].decode("ascii", "replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else ""
            if fmt not in FORMATS:
                raise MetatuneError(f"{path}: unknown PLY format {fmt!r}")
        elif words[0] == "element" and len(words) == 3:
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements:
            if words[1] == "list" and len(words) == 5 and words[2] in TYPES and words[3] in TYPES:
                elements[-1][2].append((words[4], TYPES[words[3]], TYPES[words[2]]))
            elif len(words) == 3 and words[1] in TYPES:
                elements[-1][2].append((words[2], TYPES[words[1]], None))
            else:
                raise MetatuneError(f"{path}: cannot read the PLY property line {line!r}")
        else:
            raise MetatuneError(f"{path}: cannot read the PLY header line {line!r}")
    if fmt is None:
        raise MetatuneError(f"{path}: the PLY header has no format line")
    return fmt, elements, body_start


def read_elements(path: str | Path, want: str = "vertex") -> dict[str, np.ndarray]:
    """The scalar properties of element `want` (one array per property, in the file's type)."""
    path = Path(path)
    if not path.is_file():
        raise MetatuneError(f"PLY file not found: {path}")
    raw = path.read_bytes()
    fmt, elements, at = _header(path, raw)
    order = FORMATS[fmt]
    if order is None:
        return _ascii(path, raw[at:].decode("ascii", "replace").split(), elements, want)
    for name, count, props in elements:
        if any(p[2] is not None for p in props):  # rows of varying length: walk them
            if name == want:
                raise MetatuneError(f"{path}: element {want!r} has list properties")
            at = _skip_lists(path, raw, at, count, props, order)
            continue
        dtype = np.dtype([(p, order + t) for p, t, _ in props])
        if at + count * dtype.itemsize > len(raw):
            raise MetatuneError(f"{path}: ends inside element {name!r} ({count} rows of {dtype.itemsize} bytes)")
        if name == want:
            table = np.frombuffer(raw, dtype=dtype, count=count, offset=at)
            return {p: table[p].astype(table[p].dtype.newbyteorder("=")) for p, _, _ in props}
        at += count * dtype.itemsize
    raise MetatuneError(f"{path}: no element {want!r}")


def _skip_lists(path: Path, raw: bytes, at: int, count: int, props: list, order: str) -> int:
    for _ in range(count):
        for _, t, list_type in props:
            if list_type is None:
                at += np.dtype(t).itemsize
            else:
                n = int(np.frombuffer(raw, dtype=order + list_type, count=1, offset=at)[0])
                at += np.dtype(list_type).itemsize + n * np.dtype(t).itemsize
        if at > len(raw):
            raise MetatuneError(f"{path}: ends inside a list element")
    return at


def _ascii(path: Path, tokens: list[str], elements: list[Element], want: str) -> dict[str, np.ndarray]:
    pos = 0
    for name, count, props in elements:
        if name == want:
            if any(p[2] is not None for p in props):
                raise MetatuneError(f"{path}: element {want!r} has list properties")
            width = len(props)
            if pos + count * width > len(tokens):
                raise MetatuneError(f"{path}: holds fewer values than {count} rows of {width}")
            try:
                table = np.array(tokens[pos: pos + count * width], dtype=np.float64).reshape(count, width)
            except ValueError as err:
                raise MetatuneError(f"{path}: {err}") from None
            return {p: table[:, i].astype(t) for i, (p, t, _) in enumerate(props)}
        for _ in range(count):  # skip this element's rows
            for _, _, list_type in props:
                pos += 1 + (int(tokens[pos]) if list_type is not None else 0)
    raise MetatuneError(f"{path}: no element {want!r}")
