"""A bundle table's rows read from the run store as Arrow record batches in the table's
Parquet schema, through the ADBC SQLite driver: rows go from SQLite to Arrow in C, several
times faster than sqlite3's Python tuples, and a 24-hour run streams a batch at a time.

The store is opened read-only, so an export never writes it while the daemon records (WAL
lets both go on), and read in one transaction: every table of a bundle is of one moment.

The driver takes each column's Arrow type from the first batch of rows; a column that is
null throughout that batch becomes int64, and a later text or float in it fails the read.
So no column of a query is ever null: a nullable column `x` is read as `ifnull(x, <zero of
its type>)` beside the flag `x IS NULL`, and the nulls are put back in Arrow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Any

import adbc_driver_sqlite
import adbc_driver_sqlite.dbapi as adbc
import pyarrow as pa
import pyarrow.compute as pc

from acquisition.export.arrow import ARROW_TYPES, parquet_schema
from acquisition.export.tables import (
    FLOAT,
    INT,
    NULLABLE_INT,
    TEXT,
    TIME,
    Column,
    ColumnType,
    Lookup,
    Table,
    integer,
)
from acquisition.store.store import StoreError, read_only_uri

BATCH_ROWS = 65_536
ZEROS: dict[ColumnType, str] = {INT: "0", NULLABLE_INT: "0", FLOAT: "0.0", TEXT: "''"}


def _or_zero(name: str) -> str:
    return f"{name}__or_zero"


def _is_null(name: str) -> str:
    return f"{name}__is_null"


def select_list(columns: Iterable[Column]) -> str:
    """The SQL column list that reads `columns` (store columns, no timestamps), never null."""
    expressions: list[str] = []
    for column in columns:
        name = column.name
        if column.nullable:
            expressions += [f"ifnull({name}, {ZEROS[column.type]}) AS {_or_zero(name)}",
                            f"{name} IS NULL AS {_is_null(name)}"]
        else:
            expressions.append(name)
    return ", ".join(expressions)


def with_nulls(columns: Iterable[Column], batch: pa.RecordBatch) -> dict[str, pa.Array]:
    """The arrays of `columns` in a batch read with `select_list`, their nulls put back."""
    arrays: dict[str, pa.Array] = {}
    for column in columns:
        arrow_type = ARROW_TYPES[column.type]
        if column.nullable:
            arrays[column.name] = pc.if_else(
                pc.cast(batch[_is_null(column.name)], pa.bool_()), pa.scalar(None, arrow_type),
                batch[_or_zero(column.name)].cast(arrow_type))
        else:  # the cast only matters for an empty result, whose columns are all int64
            arrays[column.name] = batch[column.name].cast(arrow_type)
    return arrays


def parquet_batch(table: Table, arrays: dict[str, pa.Array]) -> pa.RecordBatch:
    """The table's columns from their arrays; a timestamp is a view of its `*_ns` integers."""
    return pa.RecordBatch.from_arrays(
        [arrays[column.source].view(ARROW_TYPES[TIME]) if column.type is TIME
         else arrays[column.name] for column in table.columns],
        schema=parquet_schema(table))


class StoreReader:
    """The run store opened read-only for one export; closed when the export is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:  # not autocommit: the reads are one transaction, so one snapshot
            self._connection = adbc.connect(read_only_uri(path), autocommit=False)
        except adbc.Error as error:
            raise StoreError(f"{path}: cannot read run store: {error}") from None

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._connection.close()

    def batches(self, table: Table, params: Sequence[Any]) -> Iterator[pa.RecordBatch]:
        """The rows of `table` for `params`, in its Parquet schema, BATCH_ROWS at a time."""
        lookup = table.lookup
        found = self._lookup(table, lookup) if lookup is not None else {}
        looked_up = lookup.columns if lookup is not None else ()
        stored = [column for column in table.columns
                  if column.type is not TIME and column.name not in looked_up]
        keys = [lookup.key] if lookup is not None else []
        sql = f"SELECT {', '.join([*keys, select_list(stored)])} {table.rows}"
        for batch in self._read(sql, params):
            arrays = with_nulls(stored, batch)
            if lookup is not None:
                positions = pc.index_in(batch[lookup.key], value_set=found["id"])
                arrays |= {name: found[name].take(positions) for name in lookup.columns}
            yield parquet_batch(table, arrays)

    def _lookup(self, table: Table, lookup: Lookup) -> dict[str, pa.Array]:
        """The lookup's whole table: its `id` and the columns it gives `table`."""
        columns = [integer("id"), *(column for column in table.columns
                                    if column.name in lookup.columns)]
        parts = [with_nulls(columns, batch) for batch in self._read(
            f"SELECT {select_list(columns)} FROM {lookup.table}", ())]
        return {column.name: pa.chunked_array([part[column.name] for part in parts],
                                              ARROW_TYPES[column.type]).combine_chunks()
                for column in columns}

    def _read(self, sql: str, params: Sequence[Any]) -> Iterator[pa.RecordBatch]:
        try:
            with closing(self._connection.cursor()) as cursor:
                cursor.adbc_statement.set_options(
                    **{adbc_driver_sqlite.StatementOptions.BATCH_ROWS.value: str(BATCH_ROWS)})
                cursor.execute(sql, params)
                yield from cursor.fetch_record_batch()
        except (adbc.Error, OSError) as error:  # the driver's, and Arrow's while streaming
            raise StoreError(f"{self.path}: cannot read run store: {error}") from None
