"""Per-user conversation state: a state name and a small data dict, JSON in Redis with a TTL.

Handlers change it synchronously (no I/O); the engine writes it back, with the reply and the lock
release, in one round trip after the handler returns. One key holds both state and data (aiogram
uses two) so that loading it costs nothing beyond the lock acquisition it rides along with.
"""

from __future__ import annotations

import json
from typing import Any

ANY_STATE = "*"
_UNCHANGED = ""
_DELETE = "D"


class ChatState:
    __slots__ = ("_data", "_dirty", "_state")

    def __init__(self, raw: str = "") -> None:
        self._state: str | None = None
        self._data: dict[str, Any] = {}
        self._dirty = False
        if raw:
            try:
                loaded = json.loads(raw)
            except ValueError:
                loaded = None
            if isinstance(loaded, dict):
                s = loaded.get("s")
                d = loaded.get("d")
                self._state = s if isinstance(s, str) else None
                self._data = d if isinstance(d, dict) else {}

    @property
    def state(self) -> str | None:
        return self._state

    @property
    def data(self) -> dict[str, Any]:
        """A copy: change it through :meth:`update` so the change is saved."""
        return dict(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def set(self, state: str | None, **data: Any) -> None:
        """Enter ``state`` with fresh ``data`` (the previous data is dropped)."""
        self._state = state
        self._data = dict(data)
        self._dirty = True

    def update(self, **data: Any) -> None:
        self._data.update(data)
        self._dirty = True

    def clear(self) -> None:
        if self._state is None and not self._data:
            return  # nothing to clear: nothing to write back (the engine need not wait for Redis)
        self._state = None
        self._data = {}
        self._dirty = True

    def discard_changes(self, raw: str) -> None:
        """Forget in-memory changes (after a handler error) so nothing half-done is saved."""
        self.__init__(raw)  # type: ignore[misc]

    def dump(self) -> str:
        """What the save script takes: "" unchanged, "D" delete, else the JSON to store."""
        if not self._dirty:
            return _UNCHANGED
        if self._state is None and not self._data:
            return _DELETE
        return json.dumps({"s": self._state, "d": self._data}, ensure_ascii=False, separators=(",", ":"))
