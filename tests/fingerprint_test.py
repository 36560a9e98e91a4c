"""The same-run rule: how a content-identified path is spelt does not make another run."""

import pytest

from nrnp import errors
from nrnp.pipeline import workdirs

INPUTS = {'teacher': 'sha256:ab12', 'data': 'image folder /w/shared/jpeg: 3 files, sha256 x'}


def _fp(teacher: str, folder: str, inputs: dict = INPUTS) -> dict:
    config = {'seed': 0, 'teacher.checkpoint': teacher, 'data.image_folder': folder}
    return {'nrnp': 'x', 'config': config, 'inputs': dict(inputs)}


def test_a_path_spelt_otherwise_resumes_the_run(tmp_path):
    workdirs.claim(str(tmp_path), _fp('../shared/r20.th', '../shared/jpeg')).release()
    (tmp_path / 'compressed.nrnp').write_bytes(b'x')  # a result: the workdir holds a run
    claim = workdirs.claim(str(tmp_path), _fp('/w/shared/r20.th', '/w/shared/jpeg'))
    claim.release()
    assert claim.status == 'resume'


def test_other_content_behind_a_path_is_another_run(tmp_path):
    workdirs.claim(str(tmp_path), _fp('r20.th', 'jpeg')).release()
    (tmp_path / 'compressed.nrnp').write_bytes(b'x')
    other = {**INPUTS, 'teacher': 'sha256:cd34'}
    with pytest.raises(errors.WorkdirError, match=r"input teacher: 'sha256:ab12' -> 'sha256:cd34'"):
        workdirs.claim(str(tmp_path), _fp('r20.th', 'jpeg', other))


def test_a_name_not_identified_by_content_still_counts_as_spelt():
    named = {**INPUTS, 'teacher': 'akamaster_resnet20'}  # a registry name, not a local file
    old, new = _fp('akamaster_resnet20', 'jpeg', named), _fp('other_name', 'jpeg', named)
    changed = ["teacher.checkpoint: 'akamaster_resnet20' -> 'other_name'"]
    assert workdirs.differences(old, new) == changed
