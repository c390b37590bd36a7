"""Reports of the monitoring system under test (DUT): their schema, their import from
files, and their matching against the steps of a run."""
