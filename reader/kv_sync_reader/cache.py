"""A thread-safe in-process cache with stale-while-revalidate and stale-if-error.

- Within ``ttl`` of its load, a key's value is served without calling ``load``.
- Past ``ttl``, the first caller reloads it (synchronously, in its own thread);
  callers meanwhile get the value they would have had, "stale", at once.
- When a reload fails with a ``transient`` error, the stale value is served
  while the request comes at most ``max_stale`` seconds past the value's
  expiry; past that, the error is raised. The next caller tries again.
- A key with no value yet is loaded once: concurrent callers wait for that
  load and share its outcome (no thundering herd on a cold cache either).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar, cast

if TYPE_CHECKING:
    from collections.abc import Callable

V = TypeVar("V")


@dataclass(slots=True)
class _Slot(Generic[V]):
    value: V
    fresh_until: float


@dataclass(slots=True)
class _Flight(Generic[V]):
    """One load in progress; callers that cannot be served stale wait for it."""

    done: threading.Event = field(default_factory=threading.Event)
    value: V | None = None
    error: BaseException | None = None


class SWRCache(Generic[V]):
    """Values by key, each loaded by the ``load`` given to ``get``.

    Parameters
    ----------
    ttl
        Seconds a loaded value is served without a reload.
    max_stale
        Seconds past ``ttl`` a value is still served when its reload fails.
    clock
        Monotonic seconds (``time.monotonic``).
    transient
        Errors of ``load`` that let a stale value be served; any other error
        is raised at once.
    """

    def __init__(
        self,
        ttl: float,
        max_stale: float,
        clock: Callable[[], float],
        transient: tuple[type[Exception], ...] = (Exception,),
    ) -> None:
        self.ttl = ttl
        self.max_stale = max_stale
        self._clock = clock
        self._transient = transient
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot[V]] = {}
        self._flights: dict[str, _Flight[V]] = {}

    def get(self, key: str, load: Callable[[str], V]) -> V:
        """The value of ``key``: cached, stale while another caller reloads it, or loaded.

        Raises
        ------
        Exception
            What ``load`` raised, when no cached value may be served instead.
        """
        now = self._clock()
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None and now < slot.fresh_until:
                return slot.value
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            elif slot is not None and now < slot.fresh_until + self.max_stale:
                return slot.value  # another caller is reloading it
        if not leader:
            return self._wait(flight)
        return self._load(key, load, slot, now, flight)

    def _load(
        self,
        key: str,
        load: Callable[[str], V],
        slot: _Slot[V] | None,
        now: float,
        flight: _Flight[V],
    ) -> V:
        try:
            value = load(key)
        except BaseException as error:
            with self._lock:
                del self._flights[key]
            flight.error = error
            flight.done.set()
            stale = slot is not None and now < slot.fresh_until + self.max_stale
            if slot is not None and stale and isinstance(error, self._transient):
                return slot.value
            raise
        with self._lock:
            self._slots[key] = _Slot(value, self._clock() + self.ttl)
            del self._flights[key]
        flight.value = value
        flight.done.set()
        return value

    @staticmethod
    def _wait(flight: _Flight[V]) -> V:
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        return cast("V", flight.value)  # set before done when there is no error

    def clear(self) -> None:
        """Forget every cached value."""
        with self._lock:
            self._slots.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)
