"""The scenario's notification receiver: Alertmanager's webhook posts land here, one JSON line each in
/var/lib/webhook-sink/received.jsonl, which the tests read. A real receiver would be a chat bridge or an
incident tool; this one only keeps what it got."""

import json
import pathlib
from http.server import BaseHTTPRequestHandler, HTTPServer

RECEIVED = pathlib.Path("/var/lib/webhook-sink/received.jsonl")


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with RECEIVED.open("a") as received:
            received.write(json.dumps(json.loads(body)) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


RECEIVED.parent.mkdir(parents=True, exist_ok=True)
HTTPServer(("127.0.0.1", 9199), Sink).serve_forever()
