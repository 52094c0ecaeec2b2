"""The artifact store on S3 or MinIO: endpoint, region and credentials from a connection.

    WHENFLOW_ARTIFACTS_URL=s3://reports/whenflow
    WHENFLOW_ARTIFACTS_CONNECTION=minio
    WHENFLOW_CONN_MINIO=http://ACCESS_KEY:SECRET_KEY@127.0.0.1:9000?region=us-east-1

The connection's URL says where S3 answers and who calls it:

- `http://` or `https://` URL: the endpoint (MinIO, moto, Ceph...), with the
  access key and secret key as its user and password (percent-encode a `/`
  or `+` in them: `%2F`, `%2B`);
- `s3://KEY:SECRET@` (no host): AWS's own endpoint; `s3://KEY:SECRET@host:port`:
  that endpoint over https (`?secure=false`: http).

Settings in the query string or the connection's `extra`: `region`,
`endpoint_url` (overrides the host), `session_token`, `addressing_style`
(`path`, the default with an endpoint, or `virtual`) and `secure`. Without
a connection, s3fs finds credentials as boto does (`AWS_ACCESS_KEY_ID`,
`~/.aws`, an instance role).

The secret key and the session token are secrets: the store masks them in
every error it raises, and they never appear in a reference's URI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from whenflow.domain.connections import Connection, ConnectionResolver, UnknownConnection
from whenflow.domain.errors import StoreSettingsError
from whenflow.storage.artifacts import FsspecArtifactStore

S3_SETTINGS = ("region", "endpoint_url", "session_token", "addressing_style", "secure")
_ADDRESSING = ("path", "virtual", "auto")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class S3SettingsError(StoreSettingsError):
    """The artifacts URL or its connection cannot configure S3; the message names the setting."""


def s3_storage_options(connection: Connection) -> tuple[dict[str, Any], list[str]]:
    """The s3fs keyword arguments a connection stands for, and the secrets among them.

    Returns (`{"key", "secret", "token", "client_kwargs", "config_kwargs"}` as
    set, the values to mask). Raises S3SettingsError for an unknown scheme or
    setting; its message never contains the secret key.
    """
    parts = urlsplit(connection.url)
    scheme = parts.scheme.lower()
    where = f"connection {connection.name!r}"
    if scheme not in ("s3", "http", "https"):
        raise S3SettingsError(
            f"{where}: an artifacts connection is an s3://, http:// or https:// URL, "
            f"not {scheme or 'a URL without a scheme'}:// (see docs/artifacts.md)"
        )
    settings = _settings(connection, parts.query, where)
    options: dict[str, Any] = {}
    client: dict[str, Any] = {}
    if connection.login:
        options["key"] = connection.login
    secret = connection.password
    if secret:
        options["secret"] = secret
    token = settings.get("session_token")
    if token:
        options["token"] = token
    endpoint = settings.get("endpoint_url") or _endpoint(scheme, parts, settings, where)
    if endpoint:
        client["endpoint_url"] = endpoint
    if settings.get("region"):
        client["region_name"] = settings["region"]
    if client:
        options["client_kwargs"] = client
    addressing = settings.get("addressing_style") or ("path" if endpoint else None)
    if addressing is not None:
        if addressing not in _ADDRESSING:
            raise S3SettingsError(
                f"{where}: addressing_style={addressing!r}; use one of {', '.join(_ADDRESSING)}"
            )
        options["config_kwargs"] = {"s3": {"addressing_style": addressing}}
    return options, [v for v in (secret, token) if v]


def open_artifact_store(
    url: str | None,
    connection_name: str | None,
    connections: ConnectionResolver,
    cache_dir: str | None = None,
) -> FsspecArtifactStore:
    """The artifact store `WHENFLOW_ARTIFACTS_URL` and `WHENFLOW_ARTIFACTS_CONNECTION` name.

    No URL: the local folder `$WHENFLOW_HOME/artifacts`. A connection applies
    to an `s3://` URL only. Raises StoreSettingsError (unknown connection,
    credentials inside the URL, a bad setting, s3fs not installed).
    """
    if connection_name and not (url or "").startswith("s3://"):
        raise S3SettingsError(
            "WHENFLOW_ARTIFACTS_CONNECTION applies to an s3:// artifacts URL; set "
            "WHENFLOW_ARTIFACTS_URL=s3://bucket/prefix, or unset the connection"
        )
    if url and url.startswith("s3://") and "@" in url.partition("://")[2].partition("/")[0]:
        raise S3SettingsError(
            "WHENFLOW_ARTIFACTS_URL must not hold credentials; write s3://bucket/prefix and "
            "put the keys in a connection (WHENFLOW_ARTIFACTS_CONNECTION, docs/artifacts.md)"
        )
    if not connection_name:
        return FsspecArtifactStore(url, cache_dir)
    try:
        connection = connections.get(connection_name)
    except UnknownConnection as exc:
        raise S3SettingsError(f"WHENFLOW_ARTIFACTS_CONNECTION: {exc}") from None
    options, secrets = s3_storage_options(connection)
    return FsspecArtifactStore(url, cache_dir, storage_options=options, secrets=secrets)


def _settings(connection: Connection, query: str, where: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        settings[key] = value
    for key, value in connection.extra.items():
        if key in S3_SETTINGS and value is not None:
            settings[key] = str(value)
    unknown = sorted(set(settings) - set(S3_SETTINGS))
    if unknown:
        raise S3SettingsError(
            f"{where}: unknown S3 setting {unknown[0]!r}; known: {', '.join(S3_SETTINGS)}"
        )
    return settings


def _endpoint(scheme: str, parts: Any, settings: Mapping[str, str], where: str) -> str | None:
    host = parts.hostname
    if not host:
        if scheme != "s3":
            raise S3SettingsError(f"{where}: the {scheme}:// URL names no host")
        return None  # AWS's own endpoint, chosen by the region
    try:
        port = parts.port
    except ValueError:
        raise S3SettingsError(f"{where}: the port is not a number") from None
    if scheme in ("http", "https"):
        web = scheme
    else:
        web = "https" if _flag(settings.get("secure", "true"), where) else "http"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path = unquote(parts.path).rstrip("/")
    return f"{web}://{netloc}{path}"


def _flag(value: str, where: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise S3SettingsError(f"{where}: secure={value!r}; use true or false")
