"""Test mode (测试模式) and walk tests (现场调试), docs/installer.md: ``scope`` resolves what a
test mode covers; ``service`` starts, ends and supervises test modes and walk tests (the
gateway applies them: the CLI queues commands, the console calls it on the loop) and raises
the alerts about a forgotten test mode; ``walk`` builds a walk test's checklist and report.
Events are marked by the store (gateway/store/testmode.py); what they would have raised is
recorded by the alert path's shadow engine (gateway/alerts/shadow.py).
"""
