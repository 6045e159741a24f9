BEGIN TRANSACTION;
CREATE TABLE alert_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    channel TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    dedup_key TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE api_tokens (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
) WITHOUT ROWID;
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    body TEXT NOT NULL,
    done_at REAL,
    result TEXT
);
CREATE TABLE commission_devices (
    commission INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    events INTEGER NOT NULL,
    kinds TEXT NOT NULL,
    linkquality REAL,
    rssi REAL,
    battery REAL,
    battery_low INTEGER NOT NULL,
    PRIMARY KEY (commission, device_id)
) WITHOUT ROWID;
CREATE TABLE commissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    target TEXT NOT NULL,
    label TEXT NOT NULL,
    started_at REAL NOT NULL,
    started_by TEXT NOT NULL,
    test_mode INTEGER NOT NULL,
    finished_at REAL,
    finished_by TEXT,
    summary TEXT,
    report_html TEXT,
    report_csv TEXT
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO "counters" VALUES('accepted',4);
CREATE TABLE dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE device_state (
    device_id TEXT PRIMARY KEY,
    last_seen REAL,
    last_kind TEXT NOT NULL,
    online INTEGER,
    online_at REAL,
    battery REAL,
    battery_at REAL,
    battery_low INTEGER,
    link_quality REAL,
    tamper INTEGER,
    fault INTEGER,
    state TEXT,
    state_at REAL,
    activity_at REAL,
    events INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO "device_state" VALUES('3-2-502-door',1796601660.0,'door_closed',1,1796601600.0,NULL,NULL,NULL,NULL,NULL,NULL,'door_closed',1796601660.0,1796601660.0,2);
INSERT INTO "device_state" VALUES('3-2-502-smoke',1796601630.0,'smoke_clear',1,1796601630.0,NULL,NULL,NULL,NULL,NULL,NULL,'smoke_clear',1796601630.0,NULL,1);
INSERT INTO "device_state" VALUES('3-2-502-sos',1796601690.0,'battery',1,1796601690.0,88.0,1796601690.0,0,NULL,NULL,NULL,'',NULL,NULL,1);
CREATE TABLE escalations (
    alert_id TEXT PRIMARY KEY,
    ladder TEXT NOT NULL,
    severity INTEGER NOT NULL,
    step INTEGER NOT NULL,
    next_at REAL,
    paged_at REAL NOT NULL,
    channels TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    lane TEXT NOT NULL,
    device_id TEXT NOT NULL,
    family TEXT NOT NULL,
    kind TEXT NOT NULL,
    event_time REAL NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO "events" VALUES(1,'telemetry','3-2-502-door','door','door_opened',1796601600.0,1796601600.0,'{"device_id":"3-2-502-door","family":"door","kind":"door_opened","event_time":1796601600.0,"received_at":1796601600.0,"time_source":"gateway","model":"MCCGQ11LM","location":{"building":"3","unit":"2","household":"3-2-502","room":"入户门"},"values":{"contact":false},"source":"","raw":""}');
INSERT INTO "events" VALUES(2,'telemetry','3-2-502-smoke','smoke','smoke_clear',1796601630.0,1796601630.0,'{"device_id":"3-2-502-smoke","family":"smoke","kind":"smoke_clear","event_time":1796601630.0,"received_at":1796601630.0,"time_source":"gateway","model":"JTYJ-GD-01LM/BW","location":{"building":"3","unit":"2","household":"3-2-502","room":"入户门"},"values":{},"source":"","raw":""}');
INSERT INTO "events" VALUES(3,'telemetry','3-2-502-door','door','door_closed',1796601660.0,1796601660.0,'{"device_id":"3-2-502-door","family":"door","kind":"door_closed","event_time":1796601660.0,"received_at":1796601660.0,"time_source":"gateway","model":"MCCGQ11LM","location":{"building":"3","unit":"2","household":"3-2-502","room":"入户门"},"values":{},"source":"","raw":""}');
INSERT INTO "events" VALUES(4,'telemetry','3-2-502-sos','sos','battery',1796601690.0,1796601690.0,'{"device_id":"3-2-502-sos","family":"sos","kind":"battery","event_time":1796601690.0,"received_at":1796601690.0,"time_source":"gateway","model":"WXKG01LM","location":{"building":"3","unit":"2","household":"3-2-502","room":"入户门"},"values":{"battery":88},"source":"","raw":""}');
CREATE TABLE last_payload (
    topic TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('store.first_event_at','1796601600.0');
CREATE TABLE mqtt_keys (
    name TEXT PRIMARY KEY,
    key TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE mqtt_nonces (
    name TEXT NOT NULL,
    nonce TEXT NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (name, nonce)
) WITHOUT ROWID;
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    done_at REAL,
    body TEXT NOT NULL
);
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    retain INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE pending (
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (output, seq)
) WITHOUT ROWID;
INSERT INTO "pending" VALUES('influx',1);
INSERT INTO "pending" VALUES('influx',2);
INSERT INTO "pending" VALUES('influx',3);
INSERT INTO "pending" VALUES('influx',4);
CREATE TABLE recent_ingest (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    at REAL NOT NULL
);
INSERT INTO "recent_ingest" VALUES(2,'k2',1796601630.0);
INSERT INTO "recent_ingest" VALUES(3,'k3',1796601660.0);
INSERT INTO "recent_ingest" VALUES(4,'k1',1796601690.0);
CREATE TABLE rule_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions (
    id_sha256 TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE test_mode_devices (
    device_id TEXT NOT NULL,
    test_mode INTEGER NOT NULL,
    PRIMARY KEY (device_id, test_mode)
) WITHOUT ROWID;
CREATE TABLE test_mode_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    test_mode INTEGER NOT NULL,
    at REAL NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    via TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE test_modes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    target TEXT NOT NULL,
    label TEXT NOT NULL,
    started_at REAL NOT NULL,
    ends_at REAL NOT NULL,
    started_by TEXT NOT NULL,
    via TEXT NOT NULL,
    note TEXT NOT NULL,
    ended_at REAL,
    ended_by TEXT,
    commission INTEGER
);
CREATE TABLE users (
    id TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE visits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER,
    household TEXT NOT NULL,
    residents TEXT NOT NULL,
    visitor TEXT NOT NULL,
    at REAL NOT NULL,
    method TEXT NOT NULL,
    note TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (event_seq, household)
);
CREATE TABLE would_have (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    test_mode INTEGER,
    device_id TEXT NOT NULL,
    at REAL NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    severity INTEGER NOT NULL,
    message_zh TEXT NOT NULL,
    message_en TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE INDEX events_device_time ON events(device_id, event_time);
CREATE INDEX pending_seq ON pending(seq);
CREATE INDEX alerts_open ON alerts(dedup_key, state);
CREATE INDEX alert_log_alert ON alert_log(alert_id, id);
CREATE INDEX notifications_due ON notifications(channel, state, due_at);
CREATE INDEX visits_at ON visits(at);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX mqtt_nonces_ts ON mqtt_nonces(ts);
CREATE INDEX test_modes_open ON test_modes(ended_at, ends_at);
CREATE INDEX test_mode_log_mode ON test_mode_log(test_mode, id);
CREATE INDEX would_have_device ON would_have(device_id, at);
CREATE INDEX visits_household ON visits(household, at);
CREATE INDEX alerts_raised_at ON alerts(raised_at);
CREATE INDEX alerts_device ON alerts(json_extract(body, '$.device_id'));
CREATE INDEX alerts_resident ON alerts(json_extract(body, '$.resident'));
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('events',4);
INSERT INTO "sqlite_sequence" VALUES('recent_ingest',4);
COMMIT;
PRAGMA user_version = 1;
