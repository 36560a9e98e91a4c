"""Shared by the crash-and-resume tests: the last run checkpoint of a workdir."""

import os

from nrnp.training import checkpoints


def final_arrays(workdir):
    """(step, restored arrays) of the latest checkpoint in `workdir/checkpoints`."""
    ckpt = checkpoints.RunCheckpointer(os.path.join(workdir, 'checkpoints'))
    step = ckpt.latest_step()
    restored = ckpt.manager.restore(step)
    ckpt.close()
    return step, restored
