"""The secrets file backend and the mask seeded from constant `secret('NAME')` calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from whenflow.dsl.secret_names import constant_secret_names
from whenflow.storage.secrets import (
    FileSecretStore,
    SecretsFileError,
    secret_store,
)


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_file_backs_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path / "secrets.yaml", "API_TOKEN: from-the-file\nPIN: 1234\n")
    store = secret_store({"WHENFLOW_SECRETS_FILE": str(path), "WHENFLOW_SECRET_PIN": "9999"})
    assert store.get("API_TOKEN") == "from-the-file"
    assert store.get("PIN") == "9999"  # the variable wins
    assert store.get("MISSING") is None
    assert store.describe("MISSING") == (
        f"set the environment variable WHENFLOW_SECRET_MISSING, or add MISSING to the "
        f"secrets file {path}"
    )
    assert FileSecretStore(path).get("../etc") is None


def test_a_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "secrets.yaml", "A: b\n", mode=0o640)
    with pytest.raises(SecretsFileError, match=r"mode 0640\); run `chmod 600"):
        FileSecretStore(path).get("A")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A: [b\n", r"secrets.yaml:\d+:\d+: "),
        ("- a\n", "maps names to values"),
        ("bad-name: x\n", "not a secret name"),
        ("A: {b: c}\n", "must be text"),
    ],
)
def test_a_bad_file_says_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SecretsFileError, match=message):
        FileSecretStore(write(tmp_path / "secrets.yaml", text)).get("A")


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SecretsFileError, match="does not exist"):
        secret_store({"WHENFLOW_SECRETS_FILE": str(tmp_path / "none.yaml")})


def test_constant_secret_names() -> None:
    assert constant_secret_names("{{ secret('A') }} and {{ secret(\"B\")[:3] }}") == {"A", "B"}
    assert constant_secret_names("{{ secret(pipeline.input.name) }}") == set()
    assert constant_secret_names("no template, secret('C')") == set()
    assert constant_secret_names("{{ broken(") == set()
