"""The Python client's Server-Sent Events reader: frames as the server writes them
(`api/routes_streams.py`), keepalive comments, data split over lines."""

from __future__ import annotations

from typing import Any

from whenflow.client import ApiError, _SseFrames


def _read(lines: list[str]) -> list[dict[str, Any]]:
    frames = _SseFrames()
    found = [frames.feed(line) for line in lines]
    return [f for f in found if f is not None]


def test_each_frame_yields_its_data_and_comments_are_skipped() -> None:
    lines = [
        "event: a.started",
        "id: 1",
        'data: {"seq": 1, "eventType": "a.started"}',
        "",
        ": keepalive",
        "",
        "event: a.completed",
        "id: 2",
        'data: {"seq": 2, "eventType": "a.completed", "payload": {"x": "y: z"}}',
        "",
    ]
    assert _read(lines) == [
        {"seq": 1, "eventType": "a.started"},
        {"seq": 2, "eventType": "a.completed", "payload": {"x": "y: z"}},
    ]


def test_data_over_several_lines_is_joined_and_an_unfinished_frame_is_not_yielded() -> None:
    lines = ['data: {"seq": 3,', 'data:"eventType": "b"}', "", 'data: {"seq": 4}']
    assert _read(lines) == [{"seq": 3, "eventType": "b"}]


def test_api_error_says_status_code_and_message() -> None:
    error = ApiError(404, "not_found", "no execution 'x'", {"path": ["id"]})
    assert str(error) == "404 not_found: no execution 'x'"
    assert error.details == {"path": ["id"]}
