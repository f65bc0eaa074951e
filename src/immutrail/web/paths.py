"""Where the UI lives in the app's URL space."""

from __future__ import annotations

PREFIX = "/ui"
HOME = PREFIX + "/"
LOGIN = PREFIX + "/login"
