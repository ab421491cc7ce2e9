"""Small /v1/detect requests run on the event loop (FACEDET_INLINE_MAX_PIXELS), larger ones in the pool: the same
answers and the same refusals either way. Which path a request took is read from a counting wrapper around
the pool hand-off (`Admission.run`), which still runs the real work."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.utils.images import bad_inputs, encode, picture, truncated
from tests.utils.models import Reference
from training.data.image import load_image, to_model_input


@contextmanager
def serving(make_settings: Callable, **overrides) -> Iterator[tuple[TestClient, list[int]]]:
    """A live app and the list of pool hand-offs it makes (one entry per call)."""
    from service.main import create_app

    with TestClient(create_app(make_settings(**overrides))) as client:
        admission, handoffs = client.app.state.admission, []
        real_call = admission.run

        async def counting_call(fn, *args, **kwargs):
            handoffs.append(1)
            return await real_call(fn, *args, **kwargs)

        admission.run = counting_call
        yield client, handoffs


def small_and_large() -> dict[str, list[tuple[str, bytes]]]:
    return {
        "64x64 png": [("a.png", encode(picture(64, 64, seed=1), "PNG"))],
        "48x48 jpeg": [("b.jpg", encode(picture(48, 48, seed=2), "JPEG", quality=90))],
        "two 40x40 (3,200 px)": [("c.png", encode(picture(40, 40, seed=3), "PNG")),
                                 ("d.png", encode(picture(40, 40, seed=4), "PNG"))],
        "96x80 (7,680 px)": [("e.png", encode(picture(96, 80, seed=5), "PNG"))],
        "two 64x64 (8,192 px)": [("f.png", encode(picture(64, 64, seed=6), "PNG")),
                                 ("g.png", encode(picture(64, 64, seed=7), "PNG"))],
    }


INLINE = {"64x64 png", "48x48 jpeg", "two 40x40 (3,200 px)"}  # at most 4,096 pixels together


def probabilities(client: TestClient, files: list[tuple[str, bytes]]) -> list[float]:
    response = client.post("/v1/detect", files=[("image", f) for f in files])
    assert response.status_code == 200, response.text
    return [r["face_probability"] for r in response.json()["results"]]


def test_small_requests_skip_the_pool_and_get_the_same_answers(make_settings: Callable,
                                                              reference: Reference) -> None:
    requests = small_and_large()
    answers = {}
    for limit in (4096, 0):
        with serving(make_settings, inline_max_pixels=limit) as (client, handoffs):
            for name, files in requests.items():
                before = len(handoffs)
                answers[limit, name] = probabilities(client, files)
                assert len(handoffs) - before == (0 if limit and name in INLINE else 1), (limit, name)
    for name, files in requests.items():
        expected = reference.probability("dbvae", to_model_input(np.stack([load_image(b) for _, b in files])))
        assert answers[4096, name] == pytest.approx(list(expected), abs=1e-6)
        assert answers[4096, name] == answers[0, name]


def test_the_default_is_the_model_input_size(make_settings: Callable) -> None:
    assert make_settings().inline_max_pixels == 64 * 64


def test_bad_small_uploads_are_refused_on_the_loop_as_in_the_pool(make_settings: Callable) -> None:
    cases = {name: case for name, case in bad_inputs().items() if len(case[0]) <= 4 * 4096}
    cases["truncated 64x64.png"] = (truncated(encode(picture(64, 64), "PNG")), 422)
    assert {"empty.png", "bomb.png", "truncated 64x64.png"} <= set(cases)
    seen = {}
    for limit in (4096, 0):
        with serving(make_settings, inline_max_pixels=limit) as (client, _):
            for name, (blob, status) in cases.items():
                response = client.post("/v1/detect", files={"image": (name, blob)})
                assert response.status_code == status, (limit, name, response.text)
                seen[limit, name] = response.json()["detail"]
            # ... and the service keeps working.
            assert len(probabilities(client, small_and_large()["64x64 png"])) == 1
    for name in cases:
        assert seen[4096, name] == seen[0, name]


def test_open_small_decides_from_headers_and_never_opens_large_files() -> None:
    from service.problems import ProblemError
    from service.preprocess import open_small

    face = encode(picture(64, 64), "PNG")
    assert [im.size for _, im in open_small([("a", face)], 4096, 10**6)] == [(64, 64)]
    assert open_small([("a", face)], 4095, 10**6) is None  # one pixel over
    assert open_small([("a", face)], 0, 10**6) is None  # 0: always the pool
    # More bytes than 4 bytes per allowed pixel: left to the pool without being opened, so no error here.
    assert open_small([("a", b"not an image" * 2000)], 4096, 10**6) is None
    with pytest.raises(ProblemError) as refused:
        open_small([("a", b"not an image")], 4096, 10**6)
    assert refused.value.status == 415


def test_inline_work_is_bounded_per_turn_of_the_event_loop(make_settings: Callable) -> None:
    """Within one turn of the loop, small requests are done inline only until FACEDET_INLINE_TURN_BUDGET_MS is spent;
    the next turn starts afresh. 0 sends every request to the pool."""
    import asyncio
    import time

    from service.admission import Admission

    async def turns(admission: Admission) -> list[bool]:
        seen = [admission.inline_room()]
        with admission.inline():
            time.sleep(0.003)  # 3 ms of "work", over the 2 ms budget
        seen.append(admission.inline_room())  # same turn: spent
        await asyncio.sleep(0)  # one turn later
        seen.append(admission.inline_room())
        return seen

    for budget, expected in ((2.0, [True, False, True]), (0.0, [False, False, False])):
        admission = Admission(make_settings(inline_turn_budget_ms=budget))
        try:
            assert asyncio.run(turns(admission)) == expected, budget
        finally:
            admission.close()
    assert make_settings().inline_turn_budget_ms == 2.0


def test_with_no_inline_budget_small_requests_take_the_pool_and_answer_the_same(make_settings: Callable) -> None:
    files = small_and_large()["64x64 png"]
    answers = {}
    for budget in (2.0, 0.0):
        with serving(make_settings, inline_turn_budget_ms=budget) as (client, handoffs):
            answers[budget] = probabilities(client, files)
            assert len(handoffs) == (0 if budget else 1)
    assert answers[2.0] == answers[0.0]


def test_small_requests_over_a_turns_budget_wait_for_later_turns_in_arrival_order(make_settings: Callable) -> None:
    """Past the turn's budget a small request neither takes the pool nor goes ahead of the ones already waiting: the
    waiting ones run in later turns, first come first served, and one that is cancelled meanwhile (its client went
    away) is skipped without holding up the rest."""
    import asyncio
    import time

    from service.admission import Admission

    async def scenario(admission: Admission) -> tuple[list[str], list[int]]:
        order, turns, turn = [], [], [0]

        async def count_turns() -> None:
            while True:
                await asyncio.sleep(0)
                turn[0] += 1

        async def request(name: str) -> None:
            assert await admission.inline_turn()
            with admission.inline():
                time.sleep(0.003)  # 3 ms of work: more than the whole 2 ms budget
            order.append(name)
            turns.append(turn[0])

        ticker = asyncio.ensure_future(count_turns())
        first = [asyncio.ensure_future(request(name)) for name in "ABCD"]  # read in the same turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        late = asyncio.ensure_future(request("E"))  # read while B, C and D still wait
        first[2].cancel()  # C's client goes away while it waits
        await asyncio.gather(*first, late, return_exceptions=True)
        ticker.cancel()
        return order, turns

    admission = Admission(make_settings(inline_turn_budget_ms=2.0))
    try:
        order, turns = asyncio.run(scenario(admission))
        assert order == ["A", "B", "D", "E"]
        assert turns[0] < turns[1] <= turns[2] <= turns[3]  # B waited for a later turn than A's
        # A turn wakes as many as its budget is expected to hold: 2 ms at >= 1 ms a request (the running mean
        # starts at half the budget and here only grows), so never more than two.
        assert max(turns.count(t) for t in turns) <= 2
        assert not admission._waiting and admission._granted == 0
    finally:
        admission.close()
