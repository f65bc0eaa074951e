"""Instances get distinct ports even when the kernel hands the same free port out twice."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

import pytest

from immutrail.deploy import engine
from immutrail.deploy.runtime import RuntimeDriverError


class _Probe:
    """socket.socket's part free_port uses, answering ports from a script."""

    ports: Iterator[int] = iter(())

    def __enter__(self) -> _Probe:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        assert address == ("127.0.0.1", 0)

    def getsockname(self) -> tuple[str, int]:
        return "127.0.0.1", next(self.ports)


def test_a_port_given_out_again_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.socket, "socket", _Probe)
    _Probe.ports = iter([41000, 41000, 41001])
    assert engine.free_port() == 41000
    assert engine.free_port(avoid={41000}) == 41001


def test_no_port_left_is_a_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.socket, "socket", _Probe)
    _Probe.ports = iter([41000] * 100)
    with pytest.raises(RuntimeDriverError, match="no free loopback port"):
        engine.free_port(avoid={41000})


def test_a_real_port_is_on_loopback_and_outside_avoid() -> None:
    first = engine.free_port()
    assert 0 < first < 65536
    assert engine.free_port(avoid={first}) != first
