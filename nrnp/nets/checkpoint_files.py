"""Where a checkpoint comes from: a local path, an https:// URL or a registry name -> a file.

  source = resolve_checkpoint('cifar100_resnet56')                         # registry name
  source = resolve_checkpoint('https://host/net-1a2b3c4d.pt#sha256=<hex>')  # any URL
  source.path, source.describe()    # the local file; a one-line provenance for the report

URLs and registry entries are downloaded once into `nrnp.files.cache_dir()/checkpoints`
(`data.downloads.fetch`: resumable, atomic) and checked against a sha256: the caller's
(`teacher.checkpoint_sha256`), the URL fragment `#sha256=<hex>`, or the torch-hub prefix
in the file name (`name-<8+ hex digits>.pt`) or registry entry. Imports nothing heavy, so
the command line fetches (or, offline, names) what it needs before JAX starts.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse

from nrnp import files
from nrnp.data import downloads
from nrnp.errors import CheckpointError
from nrnp.nets import registry


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where a `teacher.checkpoint` value led.

    Attributes:
      spec: the value as given (path, URL or registry name).
      path: the local file or orbax directory.
      url: where it was downloaded from ('' for a local path).
      sha256: its full hex sha256 when it was downloaded ('' otherwise).
      entry: the registry entry, for a registry name.
    """

    spec: str
    path: str
    url: str = ''
    sha256: str = ''
    entry: registry.Entry | None = None

    def describe(self) -> str:
        """The spec for a local path; else what it is, where from, its sha256 and file."""
        if not self.url:
            return self.spec
        what = self.entry.describe() if self.entry else self.url
        where = f', {self.url}' if self.entry else ''
        return f'{what}{where}, sha256 {self.sha256}, in {self.path}'


def _hash_in_name(filename: str) -> str | None:
    """torch hub's convention: `resnet20-12fca82f.th` -> '12fca82f' (8+ hex digits)."""
    match = re.search(r'-([0-9a-f]{8,64})\.[^.]+$', filename)
    return match.group(1) if match else None


def resolve_checkpoint(
    spec: str | os.PathLike, *, sha256: str = '', download: bool = True, log=print
) -> CheckpointSource:
    """A local path for a checkpoint given as a path, an https:// URL or a registry name.

    Args:
      spec: a `.th/.pt/.pth/.npz` file or orbax directory; an http(s) URL, optionally
        with `#sha256=<hex>`; or a `nets.registry` name.
      sha256: the expected full sha256 (wins over the fragment and file-name prefix).
      download: False never touches the network (a file not yet cached raises).
      log: download progress sink.

    Raises:
      CheckpointError: not a path, URL or registry name.
      DownloadError: not downloadable (offline, download=False) or a checksum mismatch.
    """
    spec = os.fspath(spec)
    if os.path.exists(os.path.expanduser(spec)):
        return CheckpointSource(spec, os.path.expanduser(spec))
    entry = registry.ENTRIES.get(spec)
    if entry is None and not re.match(r'https?://', spec):
        raise CheckpointError(
            f'{spec}: no such checkpoint file or directory, and neither an http(s) URL nor a '
            f'registered name (known: {", ".join(registry.names())})'
        )
    url, fragment = urllib.parse.urldefrag(entry.url if entry else spec)
    filename = urllib.parse.unquote(os.path.basename(urllib.parse.urlsplit(url).path))
    if not filename:
        raise CheckpointError(f'{url}: the URL names no file')
    in_fragment = re.fullmatch(r'sha256=([0-9a-fA-F]{64})', fragment)
    sha256 = sha256 or (in_fragment.group(1) if in_fragment else '')
    prefix = None if sha256 else (entry.sha256_prefix if entry else _hash_in_name(filename))
    path = downloads.fetch(
        url,
        os.path.join(files.cache_dir(), 'checkpoints', filename),
        sha256=sha256 or None,
        sha256_prefix=prefix,
        download=download,
        log=log,
        hint='or set --config.teacher.checkpoint=PATH to a local copy',
    )
    digest = downloads.file_digest(path)
    return CheckpointSource(spec, path, url, digest, entry)
