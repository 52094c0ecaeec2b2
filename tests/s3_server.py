"""A real S3-compatible server on loopback for the tests and the benchmark: moto's server mode.

`running_s3_server()` starts `python -m moto.server` on 127.0.0.1 with port 0
in a child process, reads the port it bound from its first lines, and stops it
on exit. The server accepts any access key; the secret key used here is a
canary that the masking tests look for.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

ACCESS_KEY = "whenflow-test-access"
SECRET_KEY = "wf-s3-secret/CANARY+9f31c"
SECRET_FORMS = (SECRET_KEY, quote(SECRET_KEY, safe=""))
"""The secret key as written and percent-encoded (in a connection URL): both must stay hidden."""
REGION = "us-east-1"
_RUNNING = re.compile(r"Running on (http://127\.0\.0\.1:(\d+))")
_START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    @property
    def connection_url(self) -> str:
        """The server as a whenflow connection URL (`WHENFLOW_CONN_<NAME>`)."""
        host = self.endpoint.removeprefix("http://")
        return (
            f"http://{quote(ACCESS_KEY, safe='')}:{quote(SECRET_KEY, safe='')}@{host}"
            f"?region={REGION}"
        )

    def filesystem(self, region: str | None = REGION) -> Any:
        """An s3fs filesystem on this server (its own instance, not fsspec's cached one)."""
        import s3fs

        client: dict[str, str] = {"endpoint_url": self.endpoint}
        if region:
            client["region_name"] = region
        return s3fs.S3FileSystem(
            key=ACCESS_KEY, secret=SECRET_KEY, client_kwargs=client, skip_instance_cache=True
        )

    def make_bucket(self, name: str) -> None:
        # S3 refuses the location constraint us-east-1 (the default region, implied).
        self.filesystem(region=None).mkdir(name)


@contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port; stop it when the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    found: dict[str, str] = {}
    ready = threading.Event()

    def drain() -> None:  # the server logs every request: keep its pipe from filling
        for line in stderr:
            match = _RUNNING.search(line)
            if match and not ready.is_set():
                found["endpoint"] = match.group(1)
                ready.set()
        ready.set()  # it exited before saying where it listens

    reader = threading.Thread(target=drain, name="moto-server-stderr", daemon=True)
    reader.start()
    try:
        if not ready.wait(_START_TIMEOUT_S) or "endpoint" not in found:
            raise RuntimeError(f"moto's S3 server did not start (exit code {proc.poll()})")
        yield S3Server(found["endpoint"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        stderr.close()
