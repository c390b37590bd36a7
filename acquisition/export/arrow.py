"""The Arrow side of a bundle table: its Parquet schema, and its record batches (read by
reader.py) turned into those of the CSV file, with timestamps as text."""

from __future__ import annotations

import json
from functools import cache

import pyarrow as pa
import pyarrow.compute as pc

from acquisition.export.tables import FLOAT, INT, NULLABLE_INT, TEXT, TIME, ColumnType, Table

ARROW_TYPES: dict[ColumnType, pa.DataType] = {
    INT: pa.int64(), NULLABLE_INT: pa.int64(), FLOAT: pa.float64(), TEXT: pa.string(),
    TIME: pa.timestamp("ns", tz="UTC")}


@cache
def parquet_schema(table: Table) -> pa.Schema:
    """Each field's unit in its metadata; pandas' dtypes in the schema's."""
    fields = [pa.field(column.name, ARROW_TYPES[column.type],
                       metadata={"unit": column.unit} if column.unit else None)
              for column in table.columns]
    return pa.schema(fields, metadata={"pandas": json.dumps(table.pandas_metadata())})


def dictionary_columns(table: Table) -> list[str]:
    """The columns worth a Parquet dictionary: texts, mostly a few values repeated (device,
    unit, quality). Numbers and times are mostly distinct: a dictionary tried on them and
    dropped costs time, and leaves a bigger file (a third bigger for samples)."""
    return [column.name for column in table.columns if column.type is TEXT]


@cache
def csv_schema(table: Table) -> pa.Schema:
    return pa.schema([(column.name, pa.string() if column.type is TIME
                       else ARROW_TYPES[column.type]) for column in table.columns])


def iso_text(times: pa.Array) -> pa.Array:
    """UTC timestamps as ISO 8601 text with all nine fraction digits and Z: Arrow casts a
    zoneless ns timestamp to 'YYYY-MM-DD HH:MM:SS.fffffffff' (ten times faster than its
    strftime); a Z is added and the space, always the 11th character (ns times span the
    years 1677 to 2262), becomes a T."""
    text = pc.cast(times.view(pa.timestamp("ns")), pa.string())
    return pc.binary_replace_slice(pc.binary_join_element_wise(text, "Z", ""), 10, 11, "T")


def csv_batch(table: Table, batch: pa.RecordBatch) -> pa.RecordBatch:
    """The same rows for the CSV file: timestamps as ISO 8601 text."""
    arrays = [iso_text(array) if column.type is TIME else array
              for column, array in zip(table.columns, batch.columns, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=csv_schema(table))
