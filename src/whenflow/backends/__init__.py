"""Where a task attempt runs: `local` now; Celery and Spark in later issues."""
