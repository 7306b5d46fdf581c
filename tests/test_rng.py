"""rng.py: named streams are seeded, independent, and restorable."""

from __future__ import annotations

import pytest
import torch

from vaefunc.rng import STREAMS, Streams, get_states, make_streams, set_states


def _draws(streams: Streams) -> list[torch.Tensor]:
    return [torch.randn(5, generator=g) for g in streams]


def test_same_seed_same_streams():
    for a, b in zip(_draws(make_streams(3)), _draws(make_streams(3))):
        assert torch.equal(a, b)


def test_streams_differ_from_each_other_and_across_seeds():
    draws = _draws(make_streams(0))
    assert len(draws) == len(STREAMS) == 3
    for i in range(len(draws)):
        for j in range(i + 1, len(draws)):
            assert not torch.equal(draws[i], draws[j])
    # Neighbouring seeds do not share streams (seed 0's noise is not seed 1's shuffle, etc.).
    other = _draws(make_streams(1))
    assert not any(torch.equal(a, b) for a in draws for b in other)


def test_states_round_trip():
    streams = make_streams(7)
    states = get_states(streams)
    assert set(states) == set(STREAMS)
    first = _draws(streams)
    set_states(streams, states)
    for a, b in zip(first, _draws(streams)):
        assert torch.equal(a, b)
    # get_states copies: drawing more does not change the saved states.
    again = get_states(streams)
    assert not torch.equal(again["noise"], states["noise"])


def test_streams_do_not_touch_the_global_rng():
    rng = torch.random.get_rng_state()
    _draws(make_streams(5))
    assert torch.equal(torch.random.get_rng_state(), rng)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True, None])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match=r"seed must be a non-negative int; got"):
        make_streams(seed)
