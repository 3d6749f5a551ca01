"""How rows travel in a COPY: PostgreSQL's text format, or its binary format.

The exact path (Python's encoders, :mod:`.types`) writes text. The Arrow path writes binary
wherever it can: for 1M rows of the bench's table the server ingested binary tuples in 1.9 s
against 3.1 s for the same rows as text, and the Arrow child builds them in less than half the time
(``pgpq``, in Rust). Binary carries no type: a value is read as whatever type its column has, so
eight bytes of a double sent into a ``bigint`` column would load as a wrong integer, silently.
So binary is chosen only when the columns COPY writes have, in the catalog at that moment, exactly
the types the values are encoded as (:func:`for_arrow`), and only for the types in
:data:`BINARY_TYPES`; any other table (``numeric``, the types of ``SYNC_INFER_TYPES``, a mirror
whose column someone retyped) gets text, as before.

Row digests (row_digests.py) hash each row as sent: a text line, or a binary tuple, so a batch's
rows are split by newlines or by the row sizes the Arrow child sends with the tuples
(:class:`BinaryRows`). The two kinds of hash are kept apart by :attr:`CopyFormat.digest_tag`.

This module imports no psycopg2 and no pyarrow: the Arrow child process imports it too.
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Sequence
from dataclasses import dataclass

# What the Arrow child encodes as binary (adbc_sqlite._BINARY): format_type() names.
BINARY_TYPES = frozenset({"bigint", "double precision", "boolean", "text", "bytea"})


@dataclass(frozen=True)
class CopyFormat:
    name: str
    option: str  # what follows ``COPY ... FROM STDIN``: a constant, never data
    header: bytes  # before the first row of the stream
    trailer: bytes  # after the last
    # Before a batch digest stored with row hashes taken in this format (row_digests.py), so that the
    # hashes of one format are never compared with rows of the other: the batch is then sent whole, once.
    digest_tag: str


TEXT = CopyFormat("text", "", b"", b"", "")
# The signature, a flags field and a header extension length of zero; the trailer is a field count of -1.
BINARY = CopyFormat("binary", "(FORMAT binary)", b"PGCOPY\n\xff\r\n\x00" + bytes(8), b"\xff\xff", "binary:")


def for_arrow(model: Sequence[str], in_catalog: Sequence[str | None]) -> CopyFormat:
    """The format of an Arrow COPY of columns of ``model`` types (the type model's) into columns that
    have ``in_catalog`` types (None: no such column): binary only where the two agree on every column."""
    fits = len(model) == len(in_catalog) and all(
        m == c and m in BINARY_TYPES for m, c in zip(model, in_catalog, strict=True)
    )
    return BINARY if fits else TEXT


@dataclass(frozen=True)
class BinaryRows:
    """A batch's binary COPY tuples (no header, no trailer) and each row's size in bytes (int64, native
    order: the Arrow child's buffer, on this machine)."""

    data: bytes
    sizes: bytes

    def rows(self) -> list[bytes]:
        """Each row's tuple. Reading them off a stream by their sizes makes no slice object per row:
        0.17 s for 1M rows, against 0.5 s for memoryview slices."""
        sizes = array("q")
        sizes.frombytes(self.sizes)
        return list(map(io.BytesIO(self.data).read, sizes))
