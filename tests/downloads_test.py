"""Tests for nrnp.data.downloads against a 127.0.0.1 server: progress, checksums, resume,
retries, and fast, instructive failures offline or with downloads disabled."""

import hashlib
import os
import time

import numpy as np
import pytest
from local_http import closed_port

from nrnp import errors, files
from nrnp.data import downloads

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _fetch(url, dest, **kw):
    kw = {'sha256': SHA, 'size': len(PAYLOAD), 'timeout': 5.0, **kw}
    return downloads.fetch(url, dest, **kw)


def test_download_verifies_logs_and_is_remembered(http_server, tmp_path, monkeypatch):
    http_server.files['a.bin'] = PAYLOAD
    dest, lines = tmp_path / 'sub' / 'a.bin', []
    assert _fetch(http_server.url('a.bin'), dest, log=lines.append) == str(dest)
    assert dest.read_bytes() == PAYLOAD and not os.path.exists(f'{dest}.part')
    assert '0.3 MB downloaded' in lines[-1] and 'MB/s' in lines[-1]
    assert http_server.requests == [('a.bin', None)]
    monkeypatch.setattr(files, 'sha256_file', lambda p: pytest.fail('hashed again'))
    assert _fetch(http_server.url('a.bin'), dest) == str(dest)  # no network, no rehash
    assert len(http_server.requests) == 1
    assert downloads.fetch('http://unused.invalid/a.bin', dest, sha256_prefix=SHA[:8])


def test_checksum_mismatch_leaves_nothing(http_server, tmp_path):
    http_server.files['a.bin'] = PAYLOAD
    dest, wrong = tmp_path / 'a.bin', 'ab' * 32
    with pytest.raises(errors.DownloadError) as info:
        _fetch(http_server.url('a.bin'), dest, sha256=wrong)
    message = str(info.value)
    assert f'expected {wrong}, got {SHA}' in message and str(dest) in message
    assert os.listdir(tmp_path) == []  # no dest, no .part
    with pytest.raises(errors.DownloadError, match=r'expected 0123abcd\.\.\. \(prefix\)'):
        _fetch(http_server.url('a.bin'), dest, sha256=None, sha256_prefix='0123abcd')
    assert os.listdir(tmp_path) == []


def test_interrupted_download_resumes_on_the_next_call(http_server, tmp_path):
    http_server.files['a.bin'] = PAYLOAD
    http_server.cuts['a.bin'] = [100_000]
    dest = tmp_path / 'a.bin'
    with pytest.raises(errors.DownloadError, match=r'(?s)100000 of 300000 bytes.*run again'):
        _fetch(http_server.url('a.bin'), dest, retries=0)
    assert not dest.exists() and os.path.getsize(f'{dest}.part') == 100_000
    lines = []
    _fetch(http_server.url('a.bin'), dest, log=lines.append)
    assert dest.read_bytes() == PAYLOAD and not os.path.exists(f'{dest}.part')
    assert http_server.requests[-1] == ('a.bin', 'bytes=100000-')
    assert 'resumed at 100000 bytes' in lines[-1]


def test_transient_failures_are_retried_within_one_call(http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, '_BACKOFF_SECONDS', 0.01)
    http_server.files['a.bin'] = PAYLOAD
    http_server.cuts['a.bin'] = [50_000, 70_000]
    http_server.statuses['a.bin'] = [503]
    lines = []
    _fetch(http_server.url('a.bin'), tmp_path / 'a.bin', retries=3, log=lines.append)
    assert (tmp_path / 'a.bin').read_bytes() == PAYLOAD
    ranges = [r for _, r in http_server.requests]
    assert ranges == [None, None, 'bytes=50000-', 'bytes=120000-']  # 503, cut, cut, rest
    assert sum('retry' in line for line in lines) == 3


def test_server_ignoring_range_restarts_from_zero(http_server, tmp_path):
    http_server.files['a.bin'] = PAYLOAD
    http_server.ignore_range = True
    dest = tmp_path / 'a.bin'
    (tmp_path / 'a.bin.part').write_bytes(b'junk' * 1000)  # stale bytes must not survive
    _fetch(http_server.url('a.bin'), dest)
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests == [('a.bin', 'bytes=4000-')]


def test_http_error_fails_without_retrying(http_server, tmp_path):
    start = time.monotonic()
    with pytest.raises(errors.DownloadError, match='HTTP 404'):
        _fetch(http_server.url('nope.bin'), tmp_path / 'a.bin')
    assert len(http_server.requests) == 1 and time.monotonic() - start < 2
    assert os.listdir(tmp_path) == []


def test_download_disabled_says_what_to_put_where(http_server, tmp_path):
    dest = tmp_path / 'downloads' / 'a.bin'
    start = time.monotonic()
    with pytest.raises(errors.DownloadError) as info:
        _fetch(http_server.url('a.bin'), dest, download=False, hint='or set --config.x=DIR')
    assert time.monotonic() - start < 1 and http_server.requests == []
    message = str(info.value)
    for part in (http_server.url('a.bin'), '300000 bytes', SHA, f'put it at: {dest}'):
        assert part in message
    assert message.endswith('or set --config.x=DIR') and 'downloads are disabled' in message
    assert not dest.parent.exists()


@pytest.mark.parametrize('host', ['refused', 'unresolvable'])
def test_offline_fails_at_once_with_instructions(tmp_path, host):
    url = (
        f'http://127.0.0.1:{closed_port()}/a.bin'
        if host == 'refused'
        else 'http://no-such-host.invalid/a.bin'
    )
    dest = tmp_path / 'a.bin'
    start = time.monotonic()
    with pytest.raises(errors.DownloadError) as info:
        _fetch(url, dest, hint='or set --config.data.image_folder=DIR')
    assert time.monotonic() - start < 5
    message = str(info.value)
    for part in (url, '300000 bytes', SHA, f'put it at: {dest}', 'image_folder', 'offline'):
        assert part in message
    assert len(message.splitlines()) <= 6
    assert not dest.exists() and not os.path.exists(f'{dest}.part')


def test_existing_file_is_checked_once_then_trusted_until_it_changes(tmp_path):
    dest = tmp_path / 'a.bin'
    dest.write_bytes(PAYLOAD)
    _fetch('http://unused.invalid/a.bin', dest, download=False)
    assert os.path.isfile(f'{dest}.sha256.json')
    corrupt = bytearray(PAYLOAD)
    corrupt[7] ^= 1
    dest.write_bytes(bytes(corrupt))  # same size, new mtime: hashed again
    os.utime(dest, ns=(1, 1))
    with pytest.raises(errors.DownloadError, match=r'(?s)has sha256 .*expected .*delete it'):
        _fetch('http://unused.invalid/a.bin', dest, download=False)
    with pytest.raises(errors.DownloadError, match='has 3 bytes, not 300000'):
        dest.write_bytes(b'abc')
        _fetch('http://unused.invalid/a.bin', dest, download=False)


def test_stale_or_complete_part_files(http_server, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, '_BACKOFF_SECONDS', 0.01)
    http_server.files['a.bin'] = PAYLOAD
    part = tmp_path / 'a.bin.part'
    part.write_bytes(PAYLOAD + b'extra')  # longer than the file: 416, then from zero
    _fetch(http_server.url('a.bin'), tmp_path / 'a.bin', size=None)
    assert (tmp_path / 'a.bin').read_bytes() == PAYLOAD
    assert [r for _, r in http_server.requests] == ['bytes=300005-', None]
    (tmp_path / 'b.bin.part').write_bytes(PAYLOAD)  # complete, never renamed: no request
    _fetch(http_server.url('a.bin'), tmp_path / 'b.bin')
    assert (tmp_path / 'b.bin').read_bytes() == PAYLOAD and len(http_server.requests) == 2
