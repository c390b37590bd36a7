"""A finished run read back for people and other tools: `crf runs list` and `show`, and
the export bundle (each table as CSV and Parquet, run.json describing them, results.json)."""
