"""A bounded schemathesis run over the server's `/openapi.json`: whatever it sends
(bodies, ids, parameters generated from the schema and broken on purpose), the
answer is never a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from server_helpers import Server, push_examples, running_server

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 25


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home: Path = tmp_path_factory.mktemp("schemathesis-home")
    with running_server(home) as running:
        push_examples(running.client)
        yield running


def test_no_request_gets_a_server_error(server: Server) -> None:
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    # The streams follow an execution until it ends (the global one never does).
    api = api.exclude(path_regex=r".*/stream$")
    checked = 0
    for found in api.get_all_operations():
        operation = found.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=server.url, checks=[not_a_server_error], timeout=30)

        call()
        checked += 1
    assert checked >= 25  # every route but the two streams
