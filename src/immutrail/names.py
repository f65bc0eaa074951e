"""Environment names: one rule for every command, event and file that carries one.

Environment names become folder and file names (deployments, drift state) and are matched in
policies and grants, so each module refuses a bad one in its own error type, but all with this
rule and this message.
"""

from __future__ import annotations

import re
from collections.abc import Callable

ENVIRONMENT_GRAMMAR = "[a-z][a-z0-9-]{0,62}"
ENVIRONMENT_NAME = re.compile(ENVIRONMENT_GRAMMAR)
ENVIRONMENT_RULE = "1-63 lower-case letters, digits and dashes, a letter first (e.g. prod-eu)"


def check_environment(name: object, error: Callable[[str], Exception], what: str = "") -> str:
    """``name`` if it is an environment name; otherwise raise ``error(message)``. ``what``
    names where the value came from (an option such as ``--env``)."""
    if isinstance(name, str) and ENVIRONMENT_NAME.fullmatch(name):
        return name
    where = f"{what} " if what else ""
    raise error(f"{where}{name!r} is not an environment name: {ENVIRONMENT_RULE}")
