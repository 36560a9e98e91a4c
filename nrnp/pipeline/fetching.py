"""Fetching what a run needs before it starts: the teacher checkpoint and the CIFAR archive.

  fetching.fetch_inputs(config, log=print)   # downloads (or finds) them; or one clear error

The command line calls it right after checking the config and before JAX is imported,
so a connected machine downloads the public checkpoint and dataset with progress lines,
and an offline one fails within seconds naming every missing file (URL, size, sha256),
where to put it and the flag for local data. Later steps find the files in the cache.
"""

from __future__ import annotations

import os

from nrnp import errors
from nrnp.data import cifar, tfds_reader
from nrnp.nets import checkpoint_files


def _needs_archive(data) -> bool:
    if data.image_folder or data.name not in cifar.NAMES:
        return False
    return not tfds_reader.is_prepared(data.name, data.data_dir or None)


def fetch_inputs(config, log=print) -> None:
    """Makes the teacher checkpoint(s) and the CIFAR archive local, or raises.

    Raises:
      errors.DownloadError: listing every input that is missing and cannot be fetched.
      errors.CheckpointError: a checkpoint that is neither a path, a URL nor a registry name.
    """
    missing = []
    specs = [(config.teacher.checkpoint, config.teacher.checkpoint_sha256)]
    if config.distill.teacher_checkpoint:
        specs.append((config.distill.teacher_checkpoint, ''))
    for spec, sha256 in specs:
        if not spec or os.path.exists(os.path.expanduser(spec)):
            continue
        try:
            checkpoint_files.resolve_checkpoint(
                spec, sha256=sha256, download=config.data.download, log=log
            )
        except errors.DownloadError as e:
            missing.append(f'the teacher checkpoint {spec}: {e}')
    data = config.data
    if _needs_archive(data):
        try:
            cifar.locate_archive(
                data.name,
                data.data_dir or None,
                download=data.download,
                url=data.download_url,
                sha256=data.download_sha256,
                log=log,
            )
        except errors.DownloadError as e:
            missing.append(f'the {data.name} dataset: {e}')
    if missing:
        raise errors.DownloadError(
            f'{len(missing)} input(s) could not be fetched:\n- ' + '\n- '.join(missing)
        )
