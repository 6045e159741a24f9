"""Edge rule engine and scenario packs (智慧社区, 独居老人探访).

Not built yet: it is the subject of the rules issue. Until then the gateway's minimal alert
path (gateway/alerts.py) raises alerts for SOS, fall, smoke and gas events; the engine will
replace its decision part and keep its store-backed cursor, dedup keys and outbox.
"""
