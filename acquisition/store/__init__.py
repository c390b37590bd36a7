"""The SQLite run store, the system of record: runs, steps, samples, events, outbox."""
