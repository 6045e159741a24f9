"""Scenario packs shipped as data: smart_community.toml (智慧社区), elderly_care.toml (独居老人探访)."""
