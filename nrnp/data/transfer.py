"""One HTTP(S) transfer into a `.part` file: resumed by Range requests, with progress lines.

  check_resolvable(url)                        # Unreachable at once when offline
  stream(url, '/d/a.bin.part', size=None, timeout=30.0, log=print, name='a.bin')

`downloads.fetch` owns the policy (retries, checksums, the rename, the messages); this
module only moves bytes and sorts failures into `Transient` (timeouts, resets, 5xx,
truncated bodies: try again, resuming), `Unreachable` (the host does not resolve or
refuses connections: offline) and `Failed` (an HTTP error or a contradicting size).
"""

from __future__ import annotations

import errno
import http.client
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

_CHUNK = 1 << 20
_PROGRESS_SECONDS = 2.0
_RESOLVE_SECONDS = 4.0  # an offline machine whose resolver hangs still fails within 5 s
_OFFLINE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}


class Transient(Exception):
    """A failure worth another try; the next one resumes from the `.part` file."""


class Unreachable(Exception):
    """The host cannot be resolved or refuses connections: retrying will not help."""


class Failed(Exception):
    """Not worth another try: an HTTP error, or a size that contradicts the expected one."""


def check_resolvable(url: str) -> None:
    """Raises Unreachable when the URL's host does not resolve within a few seconds."""
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname
    if parsed.scheme not in ('http', 'https') or not host:
        raise Failed(f'{url} is not an http(s) URL')
    if urllib.request.getproxies().get(parsed.scheme) and not urllib.request.proxy_bypass(host):
        return  # the proxy resolves it
    outcome: list = []

    def resolve():
        try:
            outcome.append(socket.getaddrinfo(host, parsed.port or 443, type=socket.SOCK_STREAM))
        except OSError as e:
            outcome.append(e)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(_RESOLVE_SECONDS)
    if not outcome:
        raise Unreachable(f'host {host} did not resolve within {_RESOLVE_SECONDS:g} s')
    if isinstance(outcome[0], OSError):
        raise Unreachable(f'host {host} cannot be resolved ({outcome[0]})')


def _open(url: str, part: str, have: int, timeout: float):
    """urlopen with a Range header when `have` bytes are already here; errors classified."""
    headers = {'User-Agent': 'nrnp', 'Accept-Encoding': 'identity'}
    if have:
        headers['Range'] = f'bytes={have}-'
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416:  # the range does not fit the file: start again
            os.remove(part)
            raise Transient('the server refused to resume; restarting') from None
        if e.code >= 500 or e.code in (408, 429):
            raise Transient(f'HTTP {e.code} {e.reason}') from None
        raise Failed(f'the server answered HTTP {e.code} {e.reason}') from None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, socket.gaierror):
            host = urllib.parse.urlsplit(url).hostname
            raise Unreachable(f'host {host} cannot be resolved ({reason})') from None
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise Failed(f'the TLS certificate of {url} does not verify ({reason})') from None
        if isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS:
            raise Unreachable(f'cannot connect to {url} ({reason.strerror})') from None
        raise Transient(f'cannot connect ({reason})') from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise Transient(f'cannot connect ({e!r})') from None


def stream(url: str, part: str, size: int | None, *, timeout: float, log, name: str) -> None:
    """Appends the rest of `url` to `part` (a Range request), or rewrites it from zero.

    Args:
      url: what to fetch.
      part: the partial file; what it holds is resumed when the server allows.
      size: the expected total size, when known.
      timeout: seconds for connecting and for each read.
      log: progress sink; name: the file name progress lines start with.

    Raises:
      Transient: worth another try (which resumes); Unreachable: offline; Failed: not
        worth another try (an HTTP error, a size the server contradicts).
    """
    have = os.path.getsize(part) if os.path.isfile(part) else 0
    if size is not None and have > size:
        have = 0
    if have and have == size:
        return  # complete already (stopped before the rename): verified next
    if have == 0 and os.path.exists(part):
        os.remove(part)
    response = _open(url, part, have, timeout)
    with response:
        length = response.headers.get('Content-Length')
        length = int(length) if length and length.isdigit() else None
        if have and response.status == 206:
            match = re.match(r'bytes (\d+)-\d+/(\d+|\*)', response.headers.get('Content-Range', ''))
            if not match or int(match.group(1)) != have:
                os.remove(part)
                raise Transient('the server resumed at another offset; restarting')
            total = int(match.group(2)) if match.group(2) != '*' else None
            mode = 'ab'
        else:  # 200: the server ignored the range (or there was none): from zero
            have, mode = 0, 'wb'
            total = length
        if total is None and length is not None:
            total = have + length
        if size is not None and total is not None and total != size:
            if os.path.exists(part):
                os.remove(part)
            raise Failed(f'the server offers {total} bytes, expected {size}')
        progress = _Progress(name, have, total, log)
        try:
            with open(part, mode) as f:
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    progress.update(len(chunk))
        except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
            raise Transient(f'the connection broke after {progress.done} bytes ({e!r})') from None
    if total is not None and progress.done < total:
        raise Transient(f'the connection closed after {progress.done} of {total} bytes')
    progress.finish()


class _Progress:
    """Progress lines: bytes done/total, MB/s and ETA at most every ~2 s, and one at the end."""

    def __init__(self, name: str, done: int, total: int | None, log):
        self.name, self.done, self.total, self.log = name, done, total, log
        self.start_bytes, self.start = done, time.monotonic()
        self.last = self.start

    def _rate(self, now: float) -> float:
        return (self.done - self.start_bytes) / max(now - self.start, 1e-6)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last < _PROGRESS_SECONDS:
            return
        self.last, rate = now, self._rate(now)
        line = f'{self.name}: {self.done / 1e6:.1f}'
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float('inf')
            line += f' / {self.total / 1e6:.1f} MB ({100 * self.done / self.total:.0f} %)'
            line += f', {rate / 1e6:.1f} MB/s, ETA {eta:.0f} s'
        else:
            line += f' MB, {rate / 1e6:.1f} MB/s'
        self.log(line)

    def finish(self) -> None:
        now = time.monotonic()
        got = self.done - self.start_bytes
        resumed = f' (resumed at {self.start_bytes} bytes)' if self.start_bytes else ''
        self.log(
            f'{self.name}: {self.done / 1e6:.1f} MB downloaded{resumed}, {got} bytes in '
            f'{now - self.start:.1f} s, {self._rate(now) / 1e6:.1f} MB/s'
        )
