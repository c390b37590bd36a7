"""The run's decisions without a daemon: settling, holding, deadlines, requests, the state
table and the published status, over hand-made readbacks and explicit times."""

from __future__ import annotations

import itertools

import pytest

from acquisition.run import decisions
from acquisition.run.decisions import Response, Settling
from acquisition.run.state import (
    FINAL,
    TRANSITIONS,
    IllegalTransitionError,
    State,
    check_transition,
)
from acquisition.run.status import RunStatus, StepResult, progress_line, redact
from drivers.sample import Quality, Sample

S = 1_000_000_000  # ns


def readbacks(*points: tuple[float, float | None]) -> list[Sample]:
    """(seconds, value) pairs as flow samples; a None value is a timed-out poll."""
    return [Sample(int(t * S) + 10 * S, int(t * S), "mfc", "flow", value, "SLPM",
                   Quality.OK if value is not None else Quality.TIMEOUT)
            for t, value in points]


@pytest.mark.parametrize(("setpoint", "pct", "full_scale", "expected"), [
    (10.0, 2.0, 100.0, 0.5),  # 0.5 % of full scale beats 2 % of 10
    (50.0, 2.0, 100.0, 1.0),  # 2 % of reading
    (0.0, 2.0, 100.0, 0.5),  # a blank still has a band: the floor
])
def test_settle_tolerance(setpoint: float, pct: float, full_scale: float,
                          expected: float) -> None:
    assert decisions.settle_tolerance(setpoint, pct, full_scale) == pytest.approx(expected)


@pytest.mark.parametrize(("values", "since_s"), [
    ([(0, 5.0), (1, 9.0), (2, 9.9), (3, 10.1)], 2),  # entered the band at 2 s
    ([(0, 9.9), (1, 10.0), (2, 12.0)], None),  # left it: not in band now
    ([(0, 9.9), (1, None), (2, 10.0)], 2),  # a failed poll breaks the run of good ones
    ([], None),
])
def test_in_band_since(values: list[tuple[float, float | None]], since_s: float | None) -> None:
    since = decisions.in_band_since(readbacks(*values), 10.0, 0.5)
    assert since == (None if since_s is None else since_s * S)


@pytest.mark.parametrize(("since_s", "now_s", "verdict"), [
    (2.0, 4.9, Settling.WAITING),  # in band 2.9 s of a 3 s window
    (2.0, 5.0, Settling.STABLE),
    (None, 5.0, Settling.WAITING),
    (None, 10.0, Settling.TIMED_OUT),  # the deadline
    (9.0, 10.0, Settling.TIMED_OUT),  # still settling at the deadline: too late
    (2.0, 10.0, Settling.TIMED_OUT),  # the deadline wins over a late look
])
def test_settling(since_s: float | None, now_s: float, verdict: Settling) -> None:
    since = None if since_s is None else int(since_s * S)
    assert decisions.settling(since, int(now_s * S), 3 * S, 10 * S) is verdict


def test_good_values_are_the_truth_window() -> None:
    assert decisions.good_values(readbacks((0, 1.0), (1, None), (2, 3.0))) == [1.0, 3.0]


@pytest.mark.parametrize(("release_ends_s", "deadline_s"), [(None, 40), (25, 25), (90, 40)])
def test_a_manual_release_ends_every_phase_by_its_own_end(
    release_ends_s: float | None, deadline_s: float
) -> None:
    ends = None if release_ends_s is None else int(release_ends_s * S)
    assert decisions.phase_deadline(10 * S, 30, ends) == deadline_s * S


@pytest.mark.parametrize(("request_", "paused", "response"), [
    ("abort", False, Response.END_RUN), ("abort", True, Response.END_RUN),
    ("fail", False, Response.END_RUN), ("fail", True, Response.END_RUN),
    ("skip", False, Response.SKIP_STEP), ("skip", True, Response.SKIP_STEP),
    ("pause", False, Response.PAUSE), ("pause", True, Response.IGNORE),
    ("resume", True, Response.REDO_STEP), ("resume", False, Response.IGNORE),
])
def test_every_request_has_one_response(request_: str, paused: bool,
                                        response: Response) -> None:
    assert decisions.respond(request_, paused) is response


def test_an_unknown_request_is_a_bug() -> None:
    with pytest.raises(ValueError, match="unknown run request 'jump'"):
        decisions.respond("jump", paused=False)


def test_ending_requests_end_in_their_own_state() -> None:
    assert decisions.ENDING == {"abort": State.ABORTED, "fail": State.FAILED}


# --- the state table ------------------------------------------------------------------------

def test_a_run_goes_through_its_phases_and_ends_in_a_final_state() -> None:
    path = [State.IDLE, State.IDLE, State.ARMING, State.SETTLING, State.HOLDING, State.ARMING,
            State.SETTLING, State.PAUSED, State.ARMING, State.SETTLING, State.HOLDING,
            State.COMPLETED, State.IDLE, State.ABORTING, State.ABORTED]
    for old, new in itertools.pairwise(path):
        check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [
    (State.IDLE, State.HOLDING),  # never hold without arming and settling
    (State.PAUSED, State.HOLDING),  # a resumed step is armed again
    (State.HOLDING, State.ABORTED),  # an abort always makes safe first
    (State.COMPLETED, State.ARMING),  # a finished run does not start again
    (State.ABORTING, State.COMPLETED),
])
def test_an_illegal_transition_raises(old: State, new: State) -> None:
    with pytest.raises(IllegalTransitionError, match=f"{old} cannot go to {new}"):
        check_transition(old, new)


def test_every_state_is_in_the_table_and_final_states_lead_only_to_a_new_run() -> None:
    assert set(TRANSITIONS) == set(State)
    for state in FINAL - {State.INTERRUPTED}:
        assert TRANSITIONS[state] == {State.IDLE}


# --- the published status -------------------------------------------------------------------

HOLDING = RunStatus(
    run_id="r1", state=State.HOLDING, sequence="ladder", steps=4, blind=True,
    results=(StepResult(1, "P1", "0 kg/h", 0.0001, 0.0005),), step=2, point="P1",
    release_active=True, target_kg_h=0.1, target="100 g/h", mfc="alicat", hold_s=60.0,
    phase_started_mono=100.0, hold_started_mono=110.0, truth_so_far_kg_h=0.1002,
    step_nominal_s=70.0, after_step_s=140.0)


def test_eta_counts_the_rest_of_the_hold_and_the_steps_after() -> None:
    assert HOLDING.eta_s(now=130.0) == pytest.approx(40.0 + 140.0)
    settling = RunStatus(step=1, phase_started_mono=100.0, step_nominal_s=70.0,
                         after_step_s=10.0)
    assert settling.eta_s(now=105.0) == pytest.approx(65.0 + 10.0)
    assert settling.eta_s(now=500.0) == pytest.approx(10.0)  # late: never negative


def test_the_view_of_a_step() -> None:
    view = HOLDING.view(130.0, {})
    assert view["step"] == 2 and view["steps"] == 4 and view["completed_steps"] == 1
    assert view["hold_elapsed_s"] == 20.0 and view["eta_s"] == 180
    assert view["target"] == "100 g/h" and view["mfc"] == "alicat"


def test_a_blind_run_hides_its_rates_in_public_until_it_has_ended() -> None:
    public = HOLDING.view(130.0, {"alicat": "no reply"}, public=True)
    assert not {"target", "target_kg_h", "truth_so_far_kg_h", "mfc"} & public.keys()
    assert public["unconfirmed"] == 1  # how many, not which (that would tell the MFC)
    assert public["release_active"] and public["step"] == 2
    ended = RunStatus(run_id="r1", state=State.COMPLETED, blind=True, sequence="ladder")
    assert ended.view(0.0, {"alicat": "x"}, public=True)["unconfirmed"] == {"alicat": "x"}


def test_redact_is_the_one_rule_for_events_too() -> None:
    event = {"step": 1, "point": "P1", "truth_kg_h": 0.1, "u_expanded_kg_h": 0.002,
             "target_kg_h": 0.1, "qc_flags": []}
    assert redact(event) == {"step": 1, "point": "P1", "qc_flags": []}


def test_the_progress_line_of_a_blind_run_says_so() -> None:
    line = progress_line(HOLDING.view(130.0, {}, public=True))
    assert "(blind)" in line and "0.1" not in line and "ETA 03:00" in line
