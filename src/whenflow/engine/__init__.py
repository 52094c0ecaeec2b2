"""The orchestrator: trigger index, event log, variable pool, transition rules.

It talks to storage, artifacts and task execution only through `ports`.
"""
