"""The data roots of the CLI's own file access (``aoetl validate``, ``profile``, ``suggest``, ``plan``).

The CLI is the developer's tool: unless the operator says otherwise, it reads and checks files under the
development data roots (``shared.policy.settings``), as the services ``aoetl dev up`` starts do. The
commands that read or check files here call ``default_to_dev_data_roots`` first; it is not done when the
CLI starts because ``shared.policy`` is costly to import and most commands (and every ``--help``) need
none of it (cold start, see ``aoetl.cli``).
"""

from __future__ import annotations

import os


def default_to_dev_data_roots() -> None:
    # imported here, not at the top: command modules import this function at their own top
    from shared.policy.settings import DATA_ROOTS_ENV, dev_data_roots_env

    os.environ.setdefault(DATA_ROOTS_ENV, dev_data_roots_env())
