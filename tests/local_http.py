"""A 127.0.0.1 HTTP file server for tests: Range requests, cut connections, failing answers.

with FileServer() as server:            # or the `http_server` fixture (conftest.py)
    server.files['a.bin'] = payload
    server.cuts['a.bin'] = [1000]       # the next answer stops after 1,000 body bytes
    fetch(server.url('a.bin'), dest)
"""

import http.server
import re
import socket
import threading


class FileServer:
    """Serves `files` (path -> bytes) on 127.0.0.1 in a thread; everything is bounded in time.

    Attributes:
      files: what is served, by URL path without the leading '/'.
      cuts: path -> byte counts; each answer pops one and closes the connection after
        that many body bytes (a truncated body).
      statuses: path -> HTTP statuses answered (and popped) before the file is served.
      ignore_range: answer 200 with the whole file even to a Range request.
      requests: (path, Range header or None) of every request, in order.
    """

    def __init__(self):
        self.files, self.cuts, self.statuses = {}, {}, {}
        self.ignore_range, self.requests = False, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold a handler thread for longer

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 (the stdlib's name)
                path = self.path.lstrip('/').split('#')[0]
                owner.requests.append((path, self.headers.get('Range')))
                if owner.statuses.get(path):
                    self.send_error(owner.statuses[path].pop(0))
                    return
                if path not in owner.files:
                    self.send_error(404)
                    return
                data = owner.files[path]
                match = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
                start = int(match.group(1)) if match and not owner.ignore_range else 0
                if start > len(data):
                    self.send_error(416)
                    return
                self.send_response(206 if match and not owner.ignore_range else 200)
                if match and not owner.ignore_range:
                    self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                self.send_header('Content-Length', str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if owner.cuts.get(path):
                    body = body[: owner.cuts[path].pop(0)]
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.server.server_address[1]}/{path}'

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
