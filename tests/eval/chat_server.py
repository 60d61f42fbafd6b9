"""A local chat-completions server for judge tests: 127.0.0.1, a free port, scripted failures.

`script(prompt, attempt)` returns what to do with the attempt-th request (0-based) whose user message is
`prompt`: ("ok", content) | ("status", code) | ("status", (code, retry_after_s)) | ("sleep", seconds) | ("garbage", body).
Every request is recorded in `requests` (the user message text).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    def __init__(self, script):
        self.script = script
        self.requests: list[str] = []
        self.payloads: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length))
                if self.path != "/v1/chat/completions":
                    self._send(404, b'{"error": "not found"}')
                    return
                prompt = payload["messages"][-1]["content"]
                with server._lock:
                    attempt = sum(1 for p in server.requests if p == prompt)
                    server.requests.append(prompt)
                    server.payloads.append(payload)
                    server.headers = dict(self.headers)
                action, arg = server.script(prompt, attempt)
                if action == "sleep":
                    time.sleep(arg)
                    return  # the client has given up by now; send nothing
                if action == "status":
                    code, retry_after = arg if isinstance(arg, tuple) else (arg, None)
                    self._send(code, b'{"error": {"message": "scripted failure"}}', retry_after)
                elif action == "garbage":
                    self._send(200, arg.encode())
                else:
                    body = {"id": "x", "object": "chat.completion", "model": payload["model"],
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": arg},
                                         "finish_reason": "stop"}]}
                    self._send(200, json.dumps(body).encode())

            def _send(self, code, body, retry_after=None):
                try:
                    self.send_response(code)
                    if retry_after is not None:
                        self.send_header("Retry-After", str(retry_after))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "ChatServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)

    def count(self, needle: str) -> int:
        """Requests whose prompt contains `needle`."""
        return sum(1 for p in self.requests if needle in p)
