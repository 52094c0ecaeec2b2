"""A store error reaches an API caller without the statement or its parameters."""

from __future__ import annotations

import json

from whenflow.api.errors import error_response, store_message
from whenflow.domain.errors import StoreError


def test_the_statement_and_its_parameters_stay_in_the_server_log() -> None:
    raw = (
        "the state store could not commit: (sqlite3.OperationalError) database is locked "
        "[SQL: INSERT INTO variables (scope, value) VALUES (?, ?)] "
        "[parameters: ('fetch', 'hunter2-canary')] "
        "(Background on this error at: https://sqlalche.me/e/20/e3q8)\nmore"
    )
    shown = store_message(str(StoreError(raw)))
    assert (
        shown == "the state store could not commit: (sqlite3.OperationalError) database is locked"
    )
    body = json.loads(error_response(503, "store_unavailable", shown).body)
    assert "hunter2-canary" not in json.dumps(body)
    assert "INSERT" not in json.dumps(body)


def test_a_plain_store_error_is_shown_as_it_is() -> None:
    assert store_message("the database is unreachable: connection refused") == (
        "the database is unreachable: connection refused"
    )
    assert store_message("") == "the store is unavailable"
