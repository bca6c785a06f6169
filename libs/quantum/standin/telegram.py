"""A local stand-in for Telegram's Bot API ``sendMessage``, over real HTTP on loopback.

It answers as the Bot API does: ``POST /bot<token>/sendMessage`` with a JSON (or form) body
holding ``chat_id`` and ``text`` gets ``{"ok": true, "result": {message}}``; an unknown token
gets 401 ``{"ok": false, "error_code": 401, "description": "Unauthorized"}``, a missing chat
or text 400 (``Bad Request: chat not found`` / ``message text is empty``), a text over 4096
characters 400 (``message is too long``). ``fail_next(n)`` makes the next ``n`` calls answer
500, to test retries. Messages received are kept in :attr:`messages`.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

LIMIT = 4096


class TelegramStandIn:
    """``with TelegramStandIn(token, chat_id) as telegram: telegram.url …``"""

    def __init__(self, token: str, chat_id: str) -> None:
        self.token = token
        self.chat_id = chat_id
        self.messages: list[dict[str, Any]] = []
        self._failures = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Telegram stand-in is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures = count

    def texts(self) -> list[str]:
        with self._lock:
            return [m["text"] for m in self.messages]

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prefix, _, method = path.lstrip("/").partition("/")
        if prefix != f"bot{self.token}":
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if method != "sendMessage":
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        with self._lock:
            if self._failures > 0:
                self._failures -= 1
                return 500, {"ok": False, "error_code": 500,
                             "description": "Internal Server Error"}
            text = str(body.get("text") or "")
            if str(body.get("chat_id")) != self.chat_id:
                return 400, {"ok": False, "error_code": 400,
                             "description": "Bad Request: chat not found"}
            if not text:
                return 400, {"ok": False, "error_code": 400,
                             "description": "Bad Request: message text is empty"}
            if len(text) > LIMIT:
                return 400, {"ok": False, "error_code": 400,
                             "description": "Bad Request: message is too long"}
            message = {"message_id": len(self.messages) + 1, "chat": {"id": self.chat_id},
                       "text": text}
            self.messages.append(message)
        return 200, {"ok": True, "result": message}

    def __enter__(self) -> TelegramStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                kind = self.headers.get("Content-Type", "")
                try:
                    if kind.startswith("application/json"):
                        body = json.loads(raw or b"{}")
                    else:
                        body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                except ValueError:
                    body = {}
                status, answer = standin._answer(self.path, body if isinstance(body, dict)
                                                 else {})
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="telegram-standin", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
