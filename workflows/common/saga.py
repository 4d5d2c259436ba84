"""The saga: undo steps registered before their step runs, compensated in reverse order."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from temporalio.exceptions import ActivityError, ChildWorkflowError


def describe_cause(error: BaseException) -> tuple[str, str]:
    """The innermost message and type of an activity/child failure."""
    while isinstance(error, (ActivityError, ChildWorkflowError)) and error.cause is not None:
        error = error.cause
    kind = getattr(error, "type", "") or type(error).__name__
    return str(error.message if hasattr(error, "message") else error), kind or ""


class NotPutBack(Exception):
    """An undo that ran but could not put its part back (e.g. someone changed it since):
    compensation goes on, and the operation cannot report `rolled_back`."""


@dataclass(eq=False)
class Undo:
    """A handle on one registered undo: `Saga.discard(handle)` drops it. A `cleanup` (stop
    a run that may still go on) tidies up but puts nothing back: it never makes an
    operation `rolled_back`."""
    description: str
    run: Callable[[], Awaitable[Any]]
    cleanup: bool = False


@dataclass
class Compensation:
    undone: list[str] = field(default_factory=list)
    not_put_back: list[str] = field(default_factory=list)  # "what (why)"
    cleaned_up: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.not_put_back

    def add(self, other: "Compensation") -> None:
        self.undone += other.undone
        self.not_put_back += other.not_put_back
        self.cleaned_up += other.cleaned_up


class Saga:
    def __init__(self) -> None:
        self._undos: list[Undo] = []

    def add(self, description: str, undo: Callable[[], Awaitable[Any]],
            cleanup: bool = False) -> Undo:
        handle = Undo(description, undo, cleanup)
        self._undos.append(handle)
        return handle

    def discard(self, *handles: Undo) -> None:
        self._undos = [u for u in self._undos if u not in handles]

    def clear(self) -> None:
        """Past the point of no return: nothing registered so far will be undone."""
        self._undos = []

    @property
    def pending(self) -> list[str]:
        return [u.description for u in self._undos]

    async def compensate(self) -> Compensation:
        result = Compensation()
        while self._undos:
            undo = self._undos.pop()
            try:
                await _shielded(undo.run)
                (result.cleaned_up if undo.cleanup else result.undone).append(undo.description)
            except Exception as e:  # noqa: BLE001 - report and keep undoing the rest
                result.not_put_back.append(f"{undo.description} ({describe_cause(e)[0]})")
        return result


async def _shielded(run: Callable[[], Awaitable[Any]]) -> Any:
    """Run one undo to its end: a cancellation must not interrupt it half-way, nor stop
    the undos after it."""
    future = asyncio.ensure_future(run())
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                return future.result()
