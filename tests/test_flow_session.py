"""FlowSession: the flow engine driven from outside gives what a batch run gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim import fat_tree, simulate_flows
from fabricsim.engine import FlowSession
from fabricsim.kernels import flowsim

FAB = fat_tree(16, 100, gpus_per_server=4)


@settings(max_examples=40)
@given(st.integers(0, 2**31), st.sampled_from([0.0, 0.01]))
def test_injected_starts_and_capacity_changes_match_a_batch_run(seed, tolerance):
    rng = np.random.default_rng(seed)
    n = 40
    src = rng.integers(0, 16, n)
    dst = (src + rng.integers(1, 16, n)) % 16
    size = rng.integers(1, 2_000_000, n)
    start = rng.choice([0, 5_000_000, 5_000_000, 40_000_000, 90_000_000], n)
    link = int(rng.integers(0, FAB.n_links))
    events = ([30_000_000, link, 0.0], [60_000_000, link, 40e9])
    batch = simulate_flows(FAB, src, dst, size, start, capacity_events=events, tolerance=tolerance,
                           seed=seed)
    routes = FAB.route(src, dst, seed=seed)
    s = FlowSession(routes.route_ptr, routes.route_links, FAB.link_state(), size,
                    tolerance=tolerance)
    finish = np.full(n, -1, np.int64)
    plan = sorted({int(t) for t in start} | {30_000_000, 60_000_000})
    for t in plan:
        ids, fin = s.advance(t - 1)
        finish[ids] = fin
        s.start(np.flatnonzero(start == t), t)
        for when, lk, cap in events:
            if when == t:
                s.set_capacity([lk], [cap], t)
    ids, fin = s.advance(flowsim.INF_PS - 1)
    finish[ids] = fin
    assert np.array_equal(finish, batch.finish_ps)


def test_misuse_is_reported():
    routes = FAB.route(np.array([0]), np.array([5]))
    s = FlowSession(routes.route_ptr, routes.route_links, FAB.link_state(), np.array([1000]))
    s.start([0], 10)
    with pytest.raises(ValueError, match="one injection time"):
        s.set_capacity([0], [1.0], 20)
    s.advance(100)
    with pytest.raises(ValueError, match="before the engine"):
        s.set_capacity([0], [1.0], 5)
    with pytest.raises(ValueError, match="only once"):
        s.start([0], 200)


@settings(max_examples=30)
@given(st.integers(0, 2**31), st.sampled_from([0.0, 0.01]), st.sampled_from(["flow", "packet"]))
def test_advance_groups_reports_whole_groups_at_their_last_flow(seed, tolerance, engine):
    """advance_groups (the runner's exact mode) stops only at the instants where a group's last
    flow finishes, reports each group once, at that flow's finish time, and leaves every flow's
    finish time exactly as stepping flow by flow does."""
    from fabricsim.engine import PacketSession

    rng = np.random.default_rng(seed)
    n = 30
    src = rng.integers(0, 16, n)
    dst = (src + rng.integers(1, 16, n)) % 16
    size = rng.integers(1, 500_000, n)
    group = rng.integers(-1, 6, n)  # -1: no group
    routes = FAB.route(src, dst, seed=seed)

    def session(with_groups):
        if engine == "flow":
            return FlowSession(routes.route_ptr, routes.route_links, FAB.link_state(), size,
                               tolerance=tolerance, flow_group=group if with_groups else None)
        return PacketSession(routes.route_ptr, routes.route_links, FAB.links.reverse,
                             FAB.link_state(), FAB.links.delay_ps, size,
                             flow_group=group if with_groups else None)

    stepped, grouped = session(False), session(True)
    for s in (stepped, grouped):
        s.start(np.arange(n), 0)
    reported = {}
    while True:
        g, t = grouped.advance_groups(flowsim.INF_PS - 1)
        if not g.size:
            break
        for gi, ti in zip(g.tolist(), t.tolist()):
            assert gi not in reported  # each group once
            reported[gi] = ti
    stepped.advance(flowsim.INF_PS - 1)
    assert np.array_equal(grouped.finish_ps, stepped.finish_ps)
    assert set(reported) == set(group[group >= 0].tolist())
    for gi, ti in reported.items():
        assert ti == int(stepped.finish_ps[group == gi].max())


# ------------------------------------------------------------------------------------------------
# The bottleneck-local re-solve (kernels/flowsim.py, _solve_certified) against the plain one
# ------------------------------------------------------------------------------------------------

def _all_to_all_finishes(local: bool, seed: int):
    """A 16-GPU all-to-all of uneven sizes, half of it starting later, on a fat-tree with ECMP
    (collisions make uneven levels: many re-solves); finish times and the session's counters."""
    rng = np.random.default_rng(seed)
    src, dst = np.nonzero(~np.eye(16, dtype=bool))
    n = src.size
    size = rng.integers(100_000, 3_000_000, n)
    late = rng.random(n) < 0.5
    routes = FAB.route(src, dst, seed=seed)
    s = FlowSession(routes.route_ptr, routes.route_links, FAB.link_state(), size,
                    bottleneck_first=local)
    s.start(np.flatnonzero(~late), 0)
    s.advance(20_000_000 - 1)
    s.start(np.flatnonzero(late), 20_000_000)
    s.advance(flowsim.INF_PS - 1)
    return s.finish_ps, s.stats()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bottleneck_first_gives_the_plain_resolve(seed):
    local, st_local = _all_to_all_finishes(True, seed)
    plain, st_plain = _all_to_all_finishes(False, seed)
    # every branch ran: local sets kept, second attempts (more tries than re-solves, each of which
    # starts with one attempt), and attempts not kept
    assert st_local["bottleneck_tries"] > st_local["solves"]
    assert st_local["bottleneck_tries"] > st_local["bottleneck_fails"] > 0
    assert st_plain["bottleneck_tries"] == 0
    assert st_local["solved_flows"] < st_plain["solved_flows"]
    # the same max-min rates up to float rounding: finishes within a few ps of ~1e8 ps
    assert np.all(local > 0)
    np.testing.assert_allclose(local, plain, rtol=1e-9, atol=4)



@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 30_000_000), st.booleans())
def test_resume_continues_flows_that_ran_in_another_session(seed, at_ps, just_before):
    """Flows run alone in one session until ``at_ps``, then handed to a second session with
    ``resume`` (finished ones recorded, the rest with their remaining bytes): the same completions,
    and the same group completions, as one session running them throughout, to the picosecond
    rounding of completions. ``just_before``: ``at_ps`` is 1 ps before a flow's completion, where
    its settled remaining bytes can round below 0."""
    rng = np.random.default_rng(seed)
    n = 30
    src = rng.integers(0, 16, n)
    dst = (src + rng.integers(1, 16, n)) % 16
    size = rng.integers(1, 2_000_000, n)
    group = rng.integers(0, 3, n)
    routes = FAB.route(src, dst, seed=seed)

    def session():
        return FlowSession(routes.route_ptr, routes.route_links, FAB.link_state(), size,
                           tolerance=0.0, flow_group=group)

    whole = session()
    whole.start(np.arange(n), 0)
    whole.advance(flowsim.INF_PS - 1)
    if just_before:
        at_ps = int(whole.finish_ps[seed % n]) - 1
    first = session()
    first.start(np.arange(n), 0)
    first.advance(at_ps)
    rem = first.remaining_bytes(at_ps)
    fin = first.finish_ps.copy()
    assert np.all(rem[fin >= 0] == 0) and np.all(rem[fin < 0] >= 0)
    assert np.all(rem <= size) and np.all(fin <= at_ps)
    second = session()
    second.resume(np.arange(n), rem, fin, at_ps)
    groups, when = second.advance_groups(at_ps)  # groups done by at_ps are reported at once
    done = dict(zip(groups.tolist(), when.tolist()))
    while second.next_event_ps() < flowsim.INF_PS:
        groups, when = second.advance_groups(flowsim.INF_PS - 1)
        done.update(zip(groups.tolist(), when.tolist()))
    np.testing.assert_allclose(second.finish_ps, whole.finish_ps, rtol=1e-9, atol=2)
    assert sorted(done) == sorted(set(group.tolist()))
    for g, t in done.items():
        assert abs(t - whole.finish_ps[group == g].max()) <= 2


def test_resume_rejects_misuse():
    routes = FAB.route(np.array([0, 1]), np.array([5, 6]))
    s = FlowSession(routes.route_ptr, routes.route_links, FAB.link_state(), np.array([1000, 1000]))
    with pytest.raises(ValueError, match="finish time after at_ps"):
        s.resume([0, 1], [0.0, 500.0], [20, -1], 10)
    with pytest.raises(ValueError, match="negative remaining"):
        s.resume([0, 1], [0.0, -1.0], [5, -1], 10)
    s.resume([0, 1], [0.0, 500.0], [5, -1], 10)
    with pytest.raises(ValueError, match="only once"):
        s.start([0], 10)  # finished already
    s.advance(flowsim.INF_PS - 1)
    assert s.finish_ps[0] == 5 and s.finish_ps[1] > 10
    assert not s.links_active(routes.route_links)


def test_remaining_bytes_never_negative_just_before_a_completion():
    """Settling a flow's bytes over several rate changes can leave it a few 1e-11 B below 0 just
    before its completion (rounded up to the picosecond); ``remaining_bytes`` gives 0 then, and
    ``resume`` takes it (the flow finishes at once). The rounding is forced here by lowering the
    stored bytes of an active flow by 1e-11 B below what its rate drains by ``at_ps``."""
    routes = FAB.route(np.array([0, 1]), np.array([5, 6]))
    s = FlowSession(routes.route_ptr, routes.route_links, FAB.link_state(), np.array([10**6, 10**6]),
                    tolerance=0.0)
    s.start([0, 1], 0)
    s.advance(1000)
    at_ps = 2000
    st = s.st
    st.rem_bytes[0] = st.rate_bps[0] * (at_ps - st.t_upd_ps[0]) / (8.0 * flowsim.PS_PER_S) - 1e-11
    rem = s.remaining_bytes(at_ps)
    assert rem[0] == 0.0 and rem[1] > 0
    again = FlowSession(routes.route_ptr, routes.route_links, FAB.link_state(),
                        np.array([10**6, 10**6]), tolerance=0.0)
    again.resume([0, 1], rem, [-1, -1], at_ps)
    again.advance(flowsim.INF_PS - 1)
    assert again.finish_ps[0] == at_ps and again.finish_ps[1] > at_ps
