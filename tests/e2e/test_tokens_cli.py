"""`whenflow tokens create|list|revoke` as a user runs them, against a real store."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from cli_helpers import run_cli, run_json


def test_create_list_revoke(tmp_path: Path) -> None:
    created = run_cli(tmp_path, "tokens", "create", "--role", "operator", "--name", "deploy bot")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("wf_")
    assert "\n" not in token
    assert "shown only this once" in created.stderr

    as_json = run_json(tmp_path, "tokens", "create", "--role", "VIEWER")
    assert as_json["role"] == "viewer"
    assert as_json["token"].startswith("wf_")

    listed = run_json(tmp_path, "tokens", "list")
    assert [(t["name"], t["role"]) for t in listed] == [("deploy bot", "operator"), ("", "viewer")]
    assert all(t["revokedAt"] is None and t["lastUsedAt"] is None for t in listed)
    table = run_cli(tmp_path, "tokens", "list")
    assert "deploy bot" in table.stdout
    assert token not in table.stdout
    assert as_json["token"] not in table.stdout + str(listed)

    with sqlite3.connect(tmp_path / "whenflow.db") as db:
        hashes = {row[0] for row in db.execute("SELECT token_hash FROM api_tokens")}
        dump = "\n".join(db.iterdump())
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in dump
    assert as_json["token"] not in dump

    first_id = listed[0]["id"]
    revoked = run_json(tmp_path, "tokens", "revoke", first_id[:8])
    assert revoked["id"] == first_id
    assert revoked["revokedAt"] is not None
    again = run_cli(tmp_path, "tokens", "revoke", first_id)
    assert again.returncode == 0
    assert f"token {first_id} revoked" in again.stdout
    after = run_json(tmp_path, "tokens", "list")
    assert [t["revokedAt"] is not None for t in after] == [True, False]


def test_bad_input_exits_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    bad_role = run_cli(tmp_path, "tokens", "create", "--role", "root")
    assert bad_role.returncode == 2
    assert "use viewer, operator or admin" in bad_role.stderr
    missing = run_cli(tmp_path, "tokens", "revoke", "nope")
    assert missing.returncode == 1
    assert "no token has the id 'nope'" in missing.stderr
    assert "Traceback" not in bad_role.stderr + missing.stderr
    no_role = run_cli(tmp_path, "tokens", "create")
    assert no_role.returncode == 2
    assert "--role" in no_role.stderr
