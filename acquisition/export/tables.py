"""The tables of an export bundle, each column described once (name, type, unit): the
Parquet schema, the CSV text, the `pd.read_csv` call and run.json's column list all
follow from it, so that a table's two files cannot disagree.

Every `*_ns` column of the store (UTC nanoseconds) becomes a timestamp column beside the
exact integer: `t_start` (timestamp[ns, tz=UTC] in Parquet, ISO 8601 with nine fraction
digits and `Z` in CSV) and `t_start_ns`. Integers that can be null carry pandas' nullable
`Int64` in the Parquet file's `pandas` metadata (the key pandas documents for Parquet), so
`pandas.read_parquet` gives them without turning them into floats. Each column says whether
the store may hold null in it, as its schema does: the reader (reader.py) needs to know, and
a test checks it against schema.sql. No pyarrow here (arrow.py and reader.py hold that
side): the command line quotes this module in its help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acquisition import __version__

NS_UNIT = "ns since 1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class ColumnType:
    """How one kind of column is held: its pandas dtype, its Arrow type (by name: this
    module stays light for the command line) and its entry in pandas' Parquet metadata."""

    dtype: str
    arrow: str
    pandas_type: str
    numpy_type: str


INT = ColumnType("int64", "int64", "int64", "int64")
NULLABLE_INT = ColumnType("Int64", "int64", "int64", "Int64")
FLOAT = ColumnType("float64", "double", "float64", "float64")
TEXT = ColumnType("str", "string", "unicode", "object")
TIME = ColumnType("datetime64[ns, UTC]", "timestamp[ns, tz=UTC]", "datetimetz",
                  "datetime64[ns]")


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    unit: str | None = None
    note: str | None = None
    nullable: bool = False

    @property
    def source(self) -> str:
        """The store's column it is read from: a timestamp from its `*_ns` integer."""
        return f"{self.name}_ns" if self.type is TIME else self.name

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.type.dtype, "parquet": self.type.arrow,
                "unit": self.unit, "note": self.note}


def timestamp(name: str, nullable: bool = False, note: str | None = None
              ) -> tuple[Column, Column]:
    """A time of the store as two columns: the timestamp and its exact integer."""
    return (Column(name, TIME, "UTC", note, nullable),
            integer(f"{name}_ns", NS_UNIT, nullable=nullable))


def integer(name: str, unit: str | None = None, note: str | None = None,
            nullable: bool = False) -> Column:
    """An integer column: pandas' nullable `Int64` where the store may hold null."""
    return Column(name, NULLABLE_INT if nullable else INT, unit, note, nullable)


def text(name: str, note: str | None = None, nullable: bool = False) -> Column:
    return Column(name, TEXT, note=note, nullable=nullable)


def real(name: str, unit: str | None = None, note: str | None = None,
         nullable: bool = False) -> Column:
    return Column(name, FLOAT, unit, note, nullable)


@dataclass(frozen=True)
class Lookup:
    """Columns of a table that come from a small store table (`table`, keyed by its `id`)
    through a key in each row (`key`): joined in Arrow, faster than in SQL (by 4 to 9 s for
    the samples of a 24-hour run)."""

    key: str
    table: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """One table of the bundle: `rows` is the SQL after a query's column list that picks
    its rows of one run from the store, in order (parameter: the run id, and with `by_dut`
    also the chosen DUT or None); each column but the timestamps is read from the store
    column of its name, or found through `lookup`."""

    name: str
    rows: str
    columns: tuple[Column, ...]
    by_dut: bool = False
    lookup: Lookup | None = None

    def read_csv(self, path: str) -> str:
        """The one `pandas.read_csv` call that gives this table's dtypes back: strings kept
        as written (only an empty field is null), timestamps parsed as UTC to the ns."""
        dtypes = {column.name: TEXT.dtype if column.type is TIME else column.type.dtype
                  for column in self.columns}
        times = {column.name: TIME.dtype for column in self.columns if column.type is TIME}
        return (f"pd.read_csv({path!r}, dtype={dtypes!r}, keep_default_na=False, "
                f"na_values=['']).astype({times!r})")

    def describe(self) -> dict[str, Any]:
        """What run.json says of the table, but for its row count."""
        return {"files": [f"{self.name}.csv", f"{self.name}.parquet"],
                "columns": [column.describe() for column in self.columns],
                "timestamps": [column.name for column in self.columns if column.type is TIME],
                "read_csv": self.read_csv(f"{self.name}.csv")}

    def pandas_metadata(self) -> dict[str, Any]:
        """The `pandas` key of the Parquet schema's metadata, as pandas documents it: what
        makes `read_parquet` give `Int64` and UTC timestamps."""
        return {"index_columns": [], "column_indexes": [],
                "columns": [{"name": column.name, "field_name": column.name,
                             "pandas_type": column.type.pandas_type,
                             "numpy_type": column.type.numpy_type,
                             "metadata": {"timezone": "UTC"} if column.type is TIME else None}
                            for column in self.columns],
                "creator": {"library": "crf-daq", "version": __version__}}


SAMPLES = Table(
    "samples",
    "FROM samples WHERE run_id = ? ORDER BY t_ns, rowid",
    (*timestamp("t"), text("device"), text("channel"),
     real("value", "per row: unit", "null unless quality is 'ok'", nullable=True),
     text("unit"), text("quality", "ok, timeout, device-error, disconnected or bad-value"),
     text("detail", "why a sample is not ok", nullable=True)),
    lookup=Lookup("channel_id", "channels", ("device", "channel", "unit")))

STEPS = Table(
    "steps",
    "FROM steps WHERE run_id = ? ORDER BY idx",
    (integer("idx", note="the step's index in the run, from 0"),
     text("release_point", nullable=True),
     real("target_value", "per row: target_unit", nullable=True),
     text("target_unit", nullable=True),
     text("mfcs_json", "JSON: the MFC used and its setpoint", nullable=True),
     *timestamp("t_start", nullable=True),
     *timestamp("t_stable", nullable=True, note="start of the hold window"),
     *timestamp("t_end", nullable=True),
     integer("stable", note="1: the flow settled and the truth was held", nullable=True),
     real("truth_mean", "per row: truth_unit", "mean MFC readback over the hold",
          nullable=True),
     real("truth_std", "per row: truth_unit", nullable=True),
     integer("truth_n", note="readbacks averaged", nullable=True),
     text("truth_unit", nullable=True),
     real("u_standard", "per row: truth_unit", "standard uncertainty of the truth",
          nullable=True),
     real("u_expanded", "per row: truth_unit", "expanded uncertainty, k = 2", nullable=True),
     text("budget_json", "JSON: the uncertainty budget", nullable=True),
     text("qc_flags", "comma-separated", nullable=True),
     integer("position_id", note="point_positions.id of the release point", nullable=True)))

EVENTS = Table(
    "events",
    "FROM events WHERE run_id = ? ORDER BY t_ns, id",
    (integer("id"), *timestamp("t"), text("kind"), text("detail", "JSON")))

DUT_REPORTS = Table(
    "dut_reports",
    "FROM dut_reports WHERE run_id = ?1 AND (?2 IS NULL OR dut_id = ?2) ORDER BY t_ns, id",
    (integer("id"), text("dut_id"), text("source", "mqtt or import"),
     *timestamp("received", note="when crf-daq received or imported it"),
     *timestamp("t", note="the report's time, or its window's middle"),
     *timestamp("window_start", nullable=True), *timestamp("window_end", nullable=True),
     real("rate", "per row: unit", "as reported"), text("unit"), real("rate_kg_h", "kg/h"),
     real("u_rate", "per row: unit", nullable=True),
     real("lat", "degree", "WGS-84", nullable=True),
     real("lon", "degree", "WGS-84", nullable=True),
     integer("detected", note="0: an explicit 'no emission' report"),
     text("raw", "the payload or CSV row as received"), text("import_key", nullable=True)),
    by_dut=True)

POINT_POSITIONS = Table(
    "point_positions",
    "FROM point_positions WHERE id IN (SELECT position_id FROM steps WHERE run_id = ?)"
    " ORDER BY id",
    (integer("id", note="steps.position_id"), text("point"), *timestamp("t"),
     real("latitude", "degree", "WGS-84"), real("longitude", "degree", "WGS-84"),
     real("altitude_m", "m", nullable=True), real("h_spread_m", "m", "1 sigma, horizontal"),
     real("v_spread_m", "m", "1 sigma, vertical", nullable=True),
     integer("n_fixes", note="0 for surveyed coordinates"),
     text("source", "'surveyed' or 'gnss:<receiver>'"), text("min_quality", nullable=True)))

TABLES = (SAMPLES, STEPS, EVENTS, DUT_REPORTS, POINT_POSITIONS)
