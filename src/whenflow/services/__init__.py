"""Use cases the CLI and API call: run, resume and inspect executions."""
