"""The ``long`` marker's sizes: CI size by default, multiplied on request, bad factors refused."""

from __future__ import annotations

import pytest
from long import SCALE_VARIABLE, scaled


def test_ci_size_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCALE_VARIABLE, raising=False)
    assert scaled(7) == 7


def test_factor_multiplies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCALE_VARIABLE, "10")
    assert scaled(7) == 70


@pytest.mark.parametrize("factor", ["0", "-3", "ten", "1.5"])
def test_bad_factor_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, factor: str) -> None:
    monkeypatch.setenv(SCALE_VARIABLE, factor)
    with pytest.raises(ValueError, match=SCALE_VARIABLE):
        scaled(1)
