"""Where the environment backend of `{{ secret('NAME') }}` finds secrets.

Shared by the backend that reads them (`storage/secrets.py`) and the executors,
which keep them out of task subprocesses: a task gets a secret only through a
binding.
"""

from __future__ import annotations

SECRET_ENV_PREFIX = "WHENFLOW_SECRET_"
