"""Compatibility name for `oo_features.services` (the package that replaced this module).

Kept only so code written against the old module keeps importing during merges (for example
`oo_features/services/redis_cluster.py` on branch rcluster); new code imports from
`oo_features.services` and its modules. Nothing is defined here.
"""

from oo_features.services import *  # noqa: F403
from oo_features.services import __all__ as __all__
from oo_features.services.processes import (  # noqa: F401
    _any_free_port,
    _is_ours,
    _port_free,
    _require_tool,
    _spawn,
    _tail,
    _terminate,
)
from oo_features.services.redis_node import _redis_binary, _redis_marker  # noqa: F401
from oo_features.services.state import HOST, STOP_TIMEOUT_S, _locked  # noqa: F401
