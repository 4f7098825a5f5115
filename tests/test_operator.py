"""The operator link: only the printed token opens everyone's usage, and guessing is shut out."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from chatlib.config import Settings
from chatlib.operator import (
    FAILURE_WINDOW_SECONDS,
    MAX_FAILURES,
    OperatorGate,
    local_base_url,
    startup_line,
)
from chatlib.visitors import is_operator

CHOSEN = "Operator-Token_0123456789abcdef"
VISITOR = "203.0.113.5"


class FakeClock:
    """Seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_printed_link_opens_the_operator_view_and_nothing_else_does() -> None:
    gate = OperatorGate()
    line = startup_line(gate, local_base_url("127.0.0.1", 7860))
    assert line is not None
    match = re.fullmatch(r"Operator view: http://127\.0\.0\.1:7860/\?operator=([\w-]+)", line)
    assert match, line
    token = match.group(1)
    assert len(token) >= 32  # secrets.token_urlsafe(24)
    assert gate.check(token, VISITOR)
    assert is_operator(
        user_name=None, admin_user_names=frozenset(), token_ok=gate.check(token, VISITOR)
    )
    assert not gate.check(None, VISITOR) and not gate.check("", VISITOR)
    assert not gate.check(token[:-1], VISITOR)
    assert not gate.check(token + "x", VISITOR)
    assert OperatorGate().token != token  # a new start, a new token


def test_a_chosen_token_survives_restarts_and_is_never_shown() -> None:
    settings = Settings.from_env({"OPERATOR_TOKEN": CHOSEN}, env_file=None)
    gate = OperatorGate.from_settings(settings)
    assert gate.check(CHOSEN, VISITOR)
    assert OperatorGate.from_settings(settings).check(CHOSEN, VISITOR)
    assert CHOSEN not in repr(gate)
    assert gate.link("https://chat.example.org/") == f"https://chat.example.org/?operator={CHOSEN}"


def test_on_a_space_the_login_is_the_way_in_unless_a_token_was_chosen() -> None:
    space = Settings.from_env({"SPACE_ID": "alice/chat"}, env_file=None)
    gate = OperatorGate.from_settings(space)
    assert not gate.enabled
    assert not gate.check(gate.token, VISITOR)
    assert gate.link("https://alice-chat.hf.space") is None
    assert startup_line(gate, "https://alice-chat.hf.space") is None
    chosen = OperatorGate.from_settings(
        Settings.from_env({"SPACE_ID": "alice/chat", "OPERATOR_TOKEN": CHOSEN}, env_file=None)
    )
    assert chosen.enabled and chosen.check(CHOSEN, VISITOR)


def test_guessing_is_shut_out_for_the_window_then_allowed_again() -> None:
    clock = FakeClock()
    gate = OperatorGate(CHOSEN, clock=clock)
    with capture_logs() as logs:
        for n in range(MAX_FAILURES):
            clock.now += 1
            assert not gate.check(f"guess-{n}", VISITOR)
        # Shut out: even the right token fails from this client until the window passes...
        assert not gate.check(CHOSEN, VISITOR)
        # ...while another client is unaffected.
        assert gate.check(CHOSEN, "198.51.100.7")
    rejected = [e for e in logs if e["event"] == "operator.token_rejected"]
    assert [e["reason"] for e in rejected] == ["wrong_token"] * MAX_FAILURES + ["too_many_failures"]
    assert rejected[MAX_FAILURES - 1]["locked"] is True
    text = repr(logs)
    assert CHOSEN not in text and "guess-" not in text and VISITOR not in text
    # The first failure leaves the window: one more try is allowed.
    clock.now += FAILURE_WINDOW_SECONDS - MAX_FAILURES + 1
    assert gate.check(CHOSEN, VISITOR)


def test_a_visit_without_a_token_is_not_a_failure() -> None:
    gate = OperatorGate(CHOSEN, max_failures=1)
    for _ in range(10):
        assert not gate.check(None, VISITOR)
        assert not gate.check("", VISITOR)
    assert gate.check(CHOSEN, VISITOR)


def test_remembered_clients_are_bounded() -> None:
    clock = FakeClock()
    gate = OperatorGate(CHOSEN, max_failures=1, max_tracked_clients=2, clock=clock)
    for client in ("a", "b", "c"):
        gate.check("wrong", client)
    assert gate.check(CHOSEN, "a")  # forgotten: the oldest of three with room for two
    assert not gate.check(CHOSEN, "c")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("0.0.0.0", "http://127.0.0.1:7860"),
        ("127.0.0.1", "http://127.0.0.1:7860"),
        ("::1", "http://[::1]:7860"),
        ("::", "http://127.0.0.1:7860"),
        ("chat.local", "http://chat.local:7860"),
    ],
)
def test_the_link_points_at_this_machine(host: str, expected: str) -> None:
    assert local_base_url(host, 7860) == expected


def test_bad_gate_parameters_are_refused() -> None:
    for bad in ({"max_failures": 0}, {"window_seconds": 0}, {"max_tracked_clients": 0}):
        kwargs: dict[str, Any] = bad
        with pytest.raises(ValueError):
            OperatorGate(**kwargs)


@given(st.one_of(st.none(), st.text(max_size=300), st.binary(max_size=50).map(repr)))
def test_any_presented_token_is_answered_without_raising(token: str | None) -> None:
    gate = OperatorGate(CHOSEN, max_failures=1_000_000)
    assert gate.check(token, VISITOR) is (token == CHOSEN)
