"""Not the nrnp package: the root of a clone of its repository (the package is `nrnp/` here).

Python runs this file only when a clone in a folder named `nrnp` sits on `sys.path` (beside
the script being run, or in the current directory) and so shadows the package. Without it
the clone's `configs/` shims would fail with a puzzling 'circular import'. With nrnp
installed elsewhere as a regular package (`pip install .`), that package is loaded in this
module's place; otherwise (an editable install of this clone, or none) the import fails
with a message naming the clone and the fix.
"""

import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _installed_elsewhere() -> str | None:
    """The `__init__.py` of an nrnp package on `sys.path` that is not this clone, or None."""
    for entry in sys.path:
        init = os.path.join(os.path.abspath(entry or os.curdir), 'nrnp', '__init__.py')
        if os.path.isfile(init) and os.path.realpath(os.path.dirname(init)) != os.path.realpath(
            _HERE
        ):
            return init
    return None


_init = _installed_elsewhere()
if _init is None:
    raise ImportError(
        f'{_HERE} is a clone of the nrnp repository, not the nrnp package: named nrnp, it '
        f'shadows the package for scripts run in {os.path.dirname(_HERE)}. Rename the clone '
        '(e.g. to nrnp-src, then pip install -e nrnp-src again if nrnp was installed from '
        'it) or run the script from another directory'
    )
# The same as if the clone were not there: the installed package, in this module's place
# (the import system returns what sys.modules holds once this file has run).
_spec = importlib.util.spec_from_file_location(
    'nrnp', _init, submodule_search_locations=[os.path.dirname(_init)]
)
_module = importlib.util.module_from_spec(_spec)
sys.modules['nrnp'] = _module
_spec.loader.exec_module(_module)
