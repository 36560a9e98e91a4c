"""A clone named `nrnp` beside a user's script (issue 25): a clear message instead of a
'circular import', and an nrnp installed elsewhere still loads."""

import os
import shutil
import subprocess
import sys

from helpers import REPO


def _clone(parent):
    """The repository's root files that matter here, in `parent/nrnp`."""
    clone = parent / 'nrnp'
    clone.mkdir(parents=True)
    shutil.copy(os.path.join(REPO, '__init__.py'), clone)
    shutil.copytree(os.path.join(REPO, 'configs'), clone / 'configs')
    shutil.copytree(os.path.join(REPO, 'nrnp', 'configs'), clone / 'nrnp' / 'configs')
    (clone / 'nrnp' / '__init__.py').write_text('')
    return clone


def _script(parent, code, pythonpath=''):
    (parent / 'script.py').write_text(code)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    if pythonpath:
        env['PYTHONPATH'] = pythonpath
    return subprocess.run(
        [sys.executable, 'script.py'], cwd=parent, env=env, capture_output=True, text=True
    )


def test_a_clone_named_nrnp_beside_a_script_says_so(tmp_path):
    clone = _clone(tmp_path)
    for code in ('from nrnp.configs import default\n', 'import nrnp\nnrnp.compress\n'):
        out = _script(tmp_path, code)
        assert out.returncode == 1, out.stdout + out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith(f'ImportError: {clone} is a clone of the nrnp repository'), last
        assert 'Rename the clone' in last and 'circular import' not in out.stderr


def test_an_nrnp_installed_elsewhere_is_loaded_in_the_clones_place(tmp_path):
    _clone(tmp_path / 'work')
    site = tmp_path / 'site' / 'nrnp'
    site.mkdir(parents=True)
    (site / '__init__.py').write_text("WHERE = 'site'\n")
    (site / 'sub.py').write_text('VALUE = 7\n')
    code = 'import nrnp, nrnp.sub\nprint(nrnp.WHERE, nrnp.sub.VALUE, nrnp.__file__)\n'
    out = _script(tmp_path / 'work', code, pythonpath=str(tmp_path / 'site'))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['site', '7', str(site / '__init__.py')]
