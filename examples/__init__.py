"""Example pipelines' task code; importable as `examples.<module>` from the repo root."""
