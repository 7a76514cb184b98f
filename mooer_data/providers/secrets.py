"""Credentials that cannot leak by accident: ``str()``/``repr()`` print a mask, and every
string the toolkit writes to logs, ledgers or errors passes through :func:`redact`."""

from __future__ import annotations

import threading


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value
        _KNOWN.register(value)

    def reveal(self) -> str:
        """The real value, for signing a request and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("secret", self._value))

    def __reduce__(self):
        raise TypeError("secrets are not pickled or serialised")


class _Registry:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def register(self, value: str) -> None:
        if value and len(value) >= 4:
            with self._lock:
                self._values.add(value)

    def values(self) -> list[str]:
        with self._lock:
            return sorted(self._values, key=len, reverse=True)


_KNOWN = _Registry()


def redact(text: str) -> str:
    """Replace every known secret value inside ``text`` (defence in depth)."""
    if not text:
        return text
    for value in _KNOWN.values():
        if value in text:
            text = text.replace(value, "***")
    return text
