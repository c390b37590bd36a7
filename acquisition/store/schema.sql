-- crf-daq run store, schema version 2. Open it with `sqlite3 FILE`; `samples_v` is the
-- readable view of samples. Times are UTC nanoseconds since the epoch (`t_ns`);
-- `datetime(t_ns / 1e9, 'unixepoch', 'subsec')` shows them as text.

-- One calibration run: a sequence executed once (filled by the scheduler).
CREATE TABLE IF NOT EXISTS runs (
    id              TEXT PRIMARY KEY,            -- time-sortable, e.g. 20261124T081500Z-3f2a
    station         TEXT NOT NULL,
    sequence_name   TEXT,
    sequence_json   TEXT,                        -- the full sequence definition
    sequence_hash   TEXT,
    config_hash     TEXT NOT NULL,
    operator        TEXT,
    dut             TEXT,                        -- device under test, free text / JSON
    software        TEXT NOT NULL,               -- crf-daq version
    inventory_json  TEXT,                        -- devices: model, serial, firmware, certificate
    positions_json  TEXT,                        -- release points used, as at the start
    clock_offset_s  REAL,                        -- GNSS minus host clock at start
    t_start_ns      INTEGER NOT NULL,
    t_end_ns        INTEGER,
    status          TEXT NOT NULL CHECK (status IN
                        ('running', 'completed', 'aborted', 'failed', 'interrupted')),
    reason          TEXT
);

-- One setpoint step of a run and its truth.
CREATE TABLE IF NOT EXISTS steps (
    run_id          TEXT NOT NULL REFERENCES runs(id),
    idx             INTEGER NOT NULL,
    release_point   TEXT,
    target_value    REAL,
    target_unit     TEXT,
    mfcs_json       TEXT,                        -- MFC(s) used and converted setpoints
    t_start_ns      INTEGER,
    t_stable_ns     INTEGER,
    t_end_ns        INTEGER,
    stable          INTEGER,
    truth_mean      REAL,
    truth_std       REAL,
    truth_n         INTEGER,
    truth_unit      TEXT,
    u_standard      REAL,
    u_expanded      REAL,
    budget_json     TEXT,
    qc_flags        TEXT,
    position_id     INTEGER REFERENCES point_positions(id),  -- where the point was
    PRIMARY KEY (run_id, idx)
);

-- Positions of release points as used: surveyed coordinates from the config, or the
-- mean of GNSS fixes of sufficient quality over a survey window, with their spread.
CREATE TABLE IF NOT EXISTS point_positions (
    id              INTEGER PRIMARY KEY,
    point           TEXT NOT NULL,
    t_ns            INTEGER NOT NULL,
    latitude        REAL NOT NULL,                -- WGS-84 degrees
    longitude       REAL NOT NULL,
    altitude_m      REAL,
    h_spread_m      REAL NOT NULL,                -- 1 sigma, horizontal
    v_spread_m      REAL,
    n_fixes         INTEGER NOT NULL,             -- 0 for surveyed coordinates
    source          TEXT NOT NULL,                -- 'surveyed' or 'gnss:<receiver>'
    min_quality     TEXT
);
CREATE INDEX IF NOT EXISTS point_positions_by_point ON point_positions (point, t_ns);

-- Every (device, channel) the daemon has recorded, with its unit.
CREATE TABLE IF NOT EXISTS channels (
    id              INTEGER PRIMARY KEY,
    device          TEXT NOT NULL,
    channel         TEXT NOT NULL,
    unit            TEXT NOT NULL,
    UNIQUE (device, channel, unit)
);

-- Readings, between runs too (run_id NULL). value is NULL unless quality = 'ok'.
CREATE TABLE IF NOT EXISTS samples (
    run_id          TEXT REFERENCES runs(id),
    t_ns            INTEGER NOT NULL,
    channel_id      INTEGER NOT NULL REFERENCES channels(id),
    value           REAL,
    quality         TEXT NOT NULL DEFAULT 'ok',
    detail          TEXT
);
CREATE INDEX IF NOT EXISTS samples_by_channel_time ON samples (channel_id, t_ns);
CREATE INDEX IF NOT EXISTS samples_by_run ON samples (run_id, t_ns) WHERE run_id IS NOT NULL;

CREATE VIEW IF NOT EXISTS samples_v AS
    SELECT s.run_id, s.t_ns, datetime(s.t_ns / 1e9, 'unixepoch', 'subsec') AS utc,
           c.device, c.channel, s.value, c.unit, s.quality, s.detail
    FROM samples s JOIN channels c ON c.id = s.channel_id;

-- What happened: state changes, alarms, commands, faults, notes. detail is JSON.
CREATE TABLE IF NOT EXISTS events (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT REFERENCES runs(id),
    t_ns            INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (t_ns);

-- Store-and-forward queue of MQTT messages that must arrive (QoS 1): step results and
-- run events. A row is marked sent only when the broker acknowledged it; unsent rows are
-- replayed in seq order after a reconnect or a restart. Payloads carry their seq so that
-- consumers can drop the duplicates QoS 1 allows.
CREATE TABLE IF NOT EXISTS outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    qos             INTEGER NOT NULL DEFAULT 1,
    created_ns      INTEGER NOT NULL,
    sent_ns         INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent_ns IS NULL;

-- Reports of a monitoring system under test (DUT): an emission rate, optionally where, at
-- a time or over a window; received live over MQTT or imported from a file. Which step a
-- report belongs to is worked out when results are shown, with the DUT's parameters of
-- the day, so that a corrected reporting delay needs no new import. (Added in version 2.)
CREATE TABLE IF NOT EXISTS dut_reports (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT REFERENCES runs(id),
    dut_id          TEXT NOT NULL,
    source          TEXT NOT NULL CHECK (source IN ('mqtt', 'import')),
    received_ns     INTEGER NOT NULL,             -- when crf-daq received or imported it
    t_ns            INTEGER NOT NULL,             -- the report's time, or its window's middle
    window_start_ns INTEGER,                      -- a window report: what it averaged over
    window_end_ns   INTEGER,
    rate            REAL NOT NULL,                -- as reported, in `unit`
    unit            TEXT NOT NULL,
    rate_kg_h       REAL NOT NULL,                -- the same as kg/h of the station's species
    u_rate          REAL,                         -- the DUT's uncertainty, in `unit`
    lat             REAL,                         -- WGS-84 degrees, where it put the source
    lon             REAL,
    detected        INTEGER NOT NULL,             -- 0: an explicit "no emission" report
    raw             TEXT NOT NULL,                -- the payload or CSV row as received
    import_key      TEXT UNIQUE                   -- sha256 of the file:line, so that a file
                                                  -- is imported once; NULL when live
);
CREATE INDEX IF NOT EXISTS dut_reports_by_run ON dut_reports (run_id, t_ns);
