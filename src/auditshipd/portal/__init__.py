"""The admin-only audit log portal: an index of redacted events, a web app and its API.

``auditshipd.portal.sink`` is the built-in ``portal`` sink that fills the index;
:func:`start_portal` serves the web app. The web parts are imported lazily so that
loading the sink plugin does not pull in the web stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PortalServer", "start_portal"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(name)
