"""The `crf` command line."""
