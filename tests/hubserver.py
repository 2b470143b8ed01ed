"""A minimal stand-in for the Hugging Face Hub on 127.0.0.1: the model-info and resolve endpoints that
huggingface_hub's ``model_info(files_metadata=True)`` and ``hf_hub_download`` call, for files held in memory.

``files``: repo path -> bytes. ``advertised``: repo path -> sha256 the model info and the ETag claim (default:
the real one); set it to another digest to serve a file whose bytes do not match the Hub's record.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo_id: str, files: dict[str, bytes], advertised: dict[str, str] | None = None):
        self.repo_id, self.files = repo_id, files
        self.advertised = {k: hashlib.sha256(v).hexdigest() for k, v in files.items()} | (advertised or {})
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                hub.requests.append(f"GET {self.path}")
                self._serve(body=True)

            def do_HEAD(self):  # noqa: N802
                hub.requests.append(f"HEAD {self.path}")
                self._serve(body=False)

            def _serve(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                info = f"/api/models/{hub.repo_id}/revision/main"
                resolve = f"/{hub.repo_id}/resolve/{COMMIT}/"
                if path == info:
                    self._send(200, json.dumps(hub.info()).encode(), {"Content-Type": "application/json"}, body)
                elif path.startswith(resolve) and path[len(resolve):] in hub.files:
                    name = path[len(resolve):]
                    sha = hub.advertised[name]
                    self._send(200, hub.files[name], {"X-Repo-Commit": COMMIT, "ETag": f'"{sha}"',
                                                      "X-Linked-Etag": f'"{sha}"',
                                                      "X-Linked-Size": str(len(hub.files[name]))}, body)
                else:
                    self._send(404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound"}, body)

            def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def info(self) -> dict:
        """``GET /api/models/{repo}/revision/main?blobs=True``: the repo at COMMIT with its files' LFS sha256."""
        return {"id": self.repo_id, "sha": COMMIT, "siblings": [
            {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest(),
             "lfs": {"sha256": self.advertised[name], "size": len(data), "pointerSize": 134}}
            for name, data in self.files.items()]}

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
