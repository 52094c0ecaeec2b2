"""Serve the bundled sample data over HTTP on loopback, as a stand-in for the market-data site.

    python -m examples.financial_report.sample_server --port 8765
    whenflow run examples/financial_report/pipeline.yaml -i source_url=http://127.0.0.1:8765

`GET /stock/<market>_<period>.json` and `GET /sector/<kind>_<period>.json`
answer the files of `data/` as `application/json`; anything else is a 404.
`--port 0` picks a free port; the first line printed names it.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


class _Handler(BaseHTTPRequestHandler):
    server_version = "market-samples/1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        parts = self.path.split("?", 1)[0].strip("/").split("/")
        path = DATA.joinpath(*parts) if len(parts) == 2 else None
        if path is None or parts[0] not in ("stock", "sector") or not path.is_file():
            self._send(404, b'{"error": "no such page"}')
            return
        self._send(200, path.read_bytes())

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serve(port: int = 0) -> Iterator[str]:
    """Serve `data/` on 127.0.0.1:`port` (0: a free port) for the block; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8765, help="0: a free port")
    port = parser.parse_args().port
    with serve(port) as url:
        print(f"serving the sample market data at {url} (Ctrl-C stops)", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
