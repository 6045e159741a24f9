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
INSERT INTO "alerts" VALUES('a-0001','fall:3-2-502-radar','acknowledged',1795305660.0,'{"id": "a-0001", "dedup_key": "fall:3-2-502-radar", "rule": "fall_detected", "severity": 1, "severity_zh": "一级(特别重大)", "severity_en": "critical", "state": "acknowledged", "raised_at": 1795305660.0, "last_seen": 1795305660.0, "resolved_at": null, "message_zh": "3号楼2单元502 跌倒报警", "message_en": "Fall detected: building 3, unit 2, flat 502", "location": {"building": "3", "unit": "2", "household": "3-2-502", "room": "入户门"}, "resident": "", "device_id": "3-2-502-radar", "count": 1, "evidence": [2], "notified_at": null, "acked_by": "s-day", "acked_at": 1795305720.0, "acked_via": "cli", "resolved_by": "", "resolve_note": "", "flapping": false, "settle_at": null, "settle_zh": "", "settle_en": ""}');
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    body TEXT NOT NULL,
    done_at REAL,
    result TEXT
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO "counters" VALUES('accepted',3);
INSERT INTO "counters" VALUES('malformed.bad_json',1);
INSERT INTO "counters" VALUES('visits',1);
CREATE TABLE dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    body TEXT NOT NULL
);
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
INSERT INTO "events" VALUES(1,'telemetry','3-2-502-door','door','door_opened',1795305600.0,1795305600.0,'{"device_id":"3-2-502-door","family":"door","kind":"door_opened","event_time":1795305600.0,"received_at":1795305600.0,"time_source":"gateway","model":"MCCGQ11LM","location":{"building":"3","unit":"2","household":"3-2-502","room":"入户门"},"values":{"contact":false},"source":"","raw":""}');
INSERT INTO "events" VALUES(2,'alarm','3-2-502-radar','fall','fall_detected',1795305660.0,1795305660.0,'{"device_id":"3-2-502-radar","family":"fall","kind":"fall_detected","event_time":1795305660.0,"received_at":1795305660.0,"time_source":"gateway","model":"MR60FDA1","location":{"building":"3","unit":"2","household":"3-2-502","room":"入户门"},"values":{},"source":"","raw":""}');
INSERT INTO "events" VALUES(3,'telemetry','visit:3-2-502','door','visit',1795309200.0,1795309200.0,'{"device_id":"visit:3-2-502","family":"door","kind":"visit","event_time":1795309200.0,"received_at":1795309200.0,"time_source":"gateway","model":"","location":{"building":"3","unit":"2","household":"3-2-502","room":"入户门"},"values":{"visitor":"v-li"},"source":"","raw":""}');
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('cursor.alerts','2');
INSERT INTO "meta" VALUES('plan.r-wang','1795305600.0');
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
INSERT INTO "outbox" VALUES(1,'mqtt','sensegate/alerts/a-0001','{}',1,1795305720.0);
CREATE TABLE pending (
    output TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (output, seq)
) WITHOUT ROWID;
INSERT INTO "pending" VALUES('influx',1);
INSERT INTO "pending" VALUES('influx',2);
CREATE TABLE recent_ingest (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    at REAL NOT NULL
);
INSERT INTO "recent_ingest" VALUES(1,'k1',1795305600.0);
CREATE TABLE rule_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
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
INSERT INTO "visits" VALUES(1,3,'3-2-502','r-wang','v-li',1795309200.0,'cli','送饭','{"household": "3-2-502", "residents": ["r-wang"], "visitor": "v-li", "visitor_name": "", "role": "", "at": 1795309200.0, "method": "cli", "note": "送饭", "event_seq": 3, "device_id": ""}');
CREATE INDEX events_device_time ON events(device_id, event_time);
CREATE INDEX pending_seq ON pending(seq);
CREATE INDEX alerts_open ON alerts(dedup_key, state);
CREATE INDEX visits_at ON visits(at);
CREATE INDEX alert_log_alert ON alert_log(alert_id, id);
CREATE INDEX notifications_due ON notifications(channel, state, due_at);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('events',3);
INSERT INTO "sqlite_sequence" VALUES('recent_ingest',1);
INSERT INTO "sqlite_sequence" VALUES('outbox',1);
INSERT INTO "sqlite_sequence" VALUES('visits',1);
COMMIT;
