"""What /queue shows one person (bot/app/queue_view.py): the estimate's maths, the order of
their own requests, and that other people's stay counts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.app.queue_view import ESTIMATE_FROM, preset_seconds, queue_view, ready_in
from models.snapshot import JobSnapshot, JobTiming, QueueSnapshot
from tests.properties import examples

NOW = 1000.0


def timing(model: str, run_s: float, priority: int = 0) -> JobTiming:
    return JobTiming(model, 4, priority, run_s, NOW - 1)


def running(job_id: str, user: str, model: str = "sd15", *, for_s: float = 0.0, priority: int = 0):
    return JobSnapshot(job_id, user, model, 4, priority, NOW - for_s - 5, None, NOW - for_s)


def waiting(job_id: str, user: str, position: int, model: str = "sd15", *, priority: int = 0):
    return JobSnapshot(job_id, user, model, 2, priority, NOW - 30, position, None)


def snapshot(run=(), wait=(), recent=(), workers: int = 1) -> QueueSnapshot:
    return QueueSnapshot(NOW, workers, tuple(run), tuple(wait), tuple(recent))


# -- the estimate ------------------------------------------------------------------------------


def test_a_presets_time_is_the_median_of_its_last_finished_peoples_jobs():
    recent = [timing("sd15", 100.0)] + [timing("sd15", s) for s in (10, 12, 11, 30, 13)]
    recent += [timing("sd15", 500.0, priority=2), timing("turbo", 1.0)]
    # The first (a slow load) fell out of the last ESTIMATE_FROM; the warm-up (priority 2)
    # and the other preset do not count.
    assert ESTIMATE_FROM == 5
    assert preset_seconds(recent, "sd15") == 12
    assert preset_seconds(recent, "turbo") == 1.0
    assert preset_seconds(recent, "if") is None
    assert preset_seconds([timing("sd15", 500.0, priority=2)], "sd15") is None


def test_ready_in_one_worker():
    # sd15 takes 10 s, turbo 2 s. The running job has run 4 s: 6 s left.
    recent = [timing("sd15", 10.0), timing("turbo", 2.0)]
    state = snapshot(
        run=[running("r", "bob", for_s=4.0)],
        wait=[waiting("w1", "bob", 1, "turbo"), waiting("w2", "alice", 2)],
        recent=recent,
    )
    assert ready_in(state) == pytest.approx({"r": 6.0, "w1": 6.0 + 2.0, "w2": 6.0 + 2.0 + 10.0})


def test_ready_in_shares_the_work_ahead_among_the_workers():
    recent = [timing("sd15", 10.0)]
    state = snapshot(
        run=[running("r1", "bob", for_s=2.0), running("r2", "carol", for_s=8.0)],
        wait=[waiting("w1", "dave", 1), waiting("w2", "alice", 2)],
        recent=recent,
        workers=2,
    )
    # Ahead of w1: 8 + 2 s left on two workers; of w2 that and w1's 10 s.
    assert ready_in(state) == pytest.approx(
        {"r1": 8.0, "r2": 2.0, "w1": 10 / 2 + 10, "w2": 20 / 2 + 10}
    )


def test_a_job_running_past_its_estimate_has_none_left():
    state = snapshot(run=[running("r", "bob", for_s=30.0)], recent=[timing("sd15", 10.0)])
    assert ready_in(state) == {"r": 0.0}


def test_an_unmeasured_preset_leaves_no_estimate_for_itself_and_what_waits_behind_it():
    state = snapshot(
        run=[running("r", "bob", for_s=1.0)],
        wait=[waiting("w1", "bob", 1), waiting("w2", "carol", 2, "new"), waiting("w3", "al", 3)],
        recent=[timing("sd15", 10.0)],
    )
    assert ready_in(state) == {"r": 9.0, "w1": 19.0, "w2": None, "w3": None}
    assert ready_in(snapshot(run=[running("r", "bob")])) == {"r": None}


# -- what the person sees ----------------------------------------------------------------------


def test_own_requests_first_running_then_by_position_and_others_only_counted():
    state = snapshot(
        run=[running("r1", "bob", "bob-secret-model"), running("r2", "alice", for_s=3)],
        wait=[
            waiting("w1", "bob", 1, "bob-secret-model"),
            waiting("w2", "alice", 2),
            waiting("w3", "carol", 3),
            waiting("w4", "warm-up cpu", 4, priority=2),
        ],
        recent=[timing("sd15", 10.0), timing("bob-secret-model", 5.0)],
    )
    view = queue_view(state, "alice")
    assert [(r.position, r.model) for r in view.own] == [(None, "sd15"), (2, "sd15")]
    assert view.own[0].for_s == pytest.approx(3.0) and view.own[1].for_s == pytest.approx(30.0)
    assert (view.others_waiting, view.others_running, view.upkeep) == (2, 1, 1)
    text = view.text()
    assert text.splitlines()[0] == "**Your requests**"
    assert "running for 3 s – `sd15`, 4 candidates; ready in about 7 s" in text
    # Behind: r1 (5 s), r2 (7 s left), w1 (5 s) on one worker, then its own 10 s.
    assert "#2 in line, waiting 30 s – `sd15`, 2 candidates; ready in about 27 s" in text
    assert "**Everyone else:** 2 waiting, 1 running, and 1 of the bot's own jobs" in text
    # Nothing of anyone else's request is shown: not who, not what.
    for secret in ("bob", "carol", "warm-up cpu", "w1", "r1"):
        assert secret not in text


def test_without_measurements_it_says_no_estimate_yet():
    view = queue_view(snapshot(wait=[waiting("w", "alice", 1)]), "alice")
    assert view.text().splitlines()[1].endswith("; no estimate yet")


def test_an_empty_queue_and_a_person_with_nothing_in_it():
    assert queue_view(snapshot(), "alice").text() == (
        "Nothing is waiting or running: a new `/cover` starts at once."
    )
    text = queue_view(snapshot(wait=[waiting("w", "bob", 1)]), "alice").text()
    assert text == (
        "You have no covers waiting or running.\n**Everyone else:** 1 waiting, 0 running."
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.2, "1 s"),
        (7.0, "7 s"),
        (59.5, "1 min"),
        (61, "2 min"),
        (3600, "1 h"),
        (3900, "1 h 5 min"),
    ],
)
def test_durations_are_rounded_up_for_people(seconds, shown):
    state = snapshot(wait=[waiting("w", "alice", 1)], recent=[timing("sd15", seconds)])
    view = queue_view(state, "alice")
    assert view.text().endswith(f"ready in about {shown}\n**Everyone else:** 0 waiting, 0 running.")


def test_a_model_name_cannot_break_out_of_its_code_span():
    view = queue_view(snapshot(wait=[waiting("w", "alice", 1, "my`model")]), "alice")
    assert "`my'model`" in view.text()


# -- properties --------------------------------------------------------------------------------

users = st.sampled_from(["alice", "bob", "carol"])
models = st.sampled_from(["sd15", "turbo", "unmeasured"])


@st.composite
def snapshots(draw) -> QueueSnapshot:
    run = [
        running(f"r{n}", draw(users), draw(models), for_s=draw(st.floats(0, 100)))
        for n in range(draw(st.integers(0, 3)))
    ]
    wait = [
        waiting(
            f"w{n}", draw(users), n + 1, draw(models), priority=draw(st.sampled_from([0, 0, 2]))
        )
        for n in range(draw(st.integers(0, 8)))
    ]
    recent = [timing(m, draw(st.floats(0.1, 600))) for m in draw(st.lists(models, max_size=12))]
    return snapshot(run, wait, recent, workers=draw(st.integers(1, 4)))


@given(snapshots(), users)
@settings(max_examples=examples(200))
def test_every_job_is_shown_once_in_full_or_counted_and_estimates_never_go_down(state, user):
    view = queue_view(state, user)
    jobs = (*state.running, *state.waiting)
    assert len(view.own) + view.others_waiting + view.others_running + view.upkeep == len(jobs)
    assert len(view.own) == sum(j.user_id == user for j in jobs)
    positions = [r.position for r in view.own if r.position is not None]
    assert positions == sorted(positions)
    # A later place in line is never ready sooner, and an estimate is never negative.
    ready = ready_in(state)
    estimates = [ready[j.job_id] for j in state.waiting]
    assert all(e >= 0 for e in ready.values() if e is not None)
    same_preset = [ready[j.job_id] for j in state.waiting if j.model == "sd15"]
    assert [e for e in same_preset if e is not None] == sorted(
        e for e in same_preset if e is not None
    )
    # Once one job has no estimate, none behind it has one.
    if None in estimates:
        assert all(e is None for e in estimates[estimates.index(None) :])
    view.text()  # always renders
