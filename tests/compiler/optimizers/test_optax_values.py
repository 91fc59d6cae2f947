"""One step of each Polaris.Updates combinator against reference values computed by optax
(the "matches optax" cases of Polaris's own test suite: inputs, updates and next state).

scale_by_belief is left out: its reference is optax's first step, whose second moment
uses g - m_{t-1} = g, where axonc follows AdaBelief's paper (g - m_t; see updates.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from axonc import optimizers as O
from axonc import schedules

# (combinator, params, updates, expected updates, expected next state {key: value})
CASES = {
    "add_decayed_weights": (
        O.add_decayed_weights(decay=0.95),
        [0.18884168, 0.92323774, 0.4513516],
        [0.62370003, 0.86674502, 0.11204521],
        [0.80309962, 1.74382088, 0.54082923],
        {},
    ),
    "clip": (
        O.clip(delta=2.0),
        [0.74794595, 0.99105549, 0.5621627],
        [0.84208747, 0.69837738, 0.61840895],
        [0.84208745, 0.6983774, 0.618409],
        {},
    ),
    "clip_by_global_norm": (
        O.clip_by_global_norm(max_norm=1.0),
        [0.72673265, 0.35788219, 0.75329067],
        [0.68235248, 0.56976359, 0.79599518],
        [0.571844, 0.47748914, 0.667082],
        {},
    ),
    "centralize": (
        O.centralize(),
        [0.14574998, 0.53619206, 0.68726124],
        [0.05166196, 0.3979764, 0.84524461],
        [0.05166196, 0.3979764, 0.84524461],
        {},
    ),
    "identity": (
        O.identity(),
        [0.18884168, 0.92323774, 0.4513516],
        [0.62370003, 0.86674502, 0.11204521],
        [0.62370003, 0.86674502, 0.11204521],
        {},
    ),
    "scale": (
        O.scale(1.0e-2),
        [0.29887561, 0.70429164, 0.43314898],
        [0.2584395, 0.35890494, 0.84845509],
        [0.00258439, 0.00358905, 0.00848455],
        {},
    ),
    "scale_by_state": (
        O.scale_by_state(1.0e-2),
        [0.29887561, 0.70429164, 0.43314898],
        [0.2584395, 0.35890494, 0.84845509],
        [0.00258439, 0.00358905, 0.00848455],
        {"scale": 1.0e-2},
    ),
    "scale_by_adam": (
        O.scale_by_adam(),
        [0.29236649, 0.26508023, 0.05959644],
        [0.01461005, 0.3796587, 0.76886989],
        [0.99999267, 0.9999933, 0.9999933],
        {
            "mu": [0.00146101, 0.03796587, 0.07688699],
            "nu": [2.1345357e-07, 1.4414072e-04, 5.9116090e-04],
            "count": 1,
        },
    ),
    "scale_by_radam": (
        O.scale_by_radam(),
        [0.71289699, 0.29554161, 0.50779425],
        [0.88675452, 0.21455035, 0.53581422],
        [0.88675433, 0.2145503, 0.53581405],
        {
            "mu": [0.08867545, 0.02145503, 0.05358142],
            "nu": [7.863336e-04, 4.603185e-05, 2.870969e-04],
            "count": 1,
        },
    ),
    "scale_by_rms": (
        O.scale_by_rms(),
        [0.77100057, 0.98078091, 0.78499164],
        [0.25156708, 0.30524656, 0.97350756],
        [3.162275, 3.162276, 3.1622777],
        {"nu": [0.0063286, 0.00931755, 0.0947717]},
    ),
    "scale_by_rss": (
        O.scale_by_rss(),
        [0.41327447, 0.06948837, 0.03234601],
        [0.2137085, 0.84399692, 0.63099467],
        [0.55993116, 0.93642795, 0.89401275],
        {"sum_of_squares": [0.14567132, 0.81233084, 0.49815428]},
    ),
    "scale_by_schedule": (
        O.scale_by_schedule(schedules.polynomial_decay(1.0e-2)),
        [0.77425031, 0.65418105, 0.86150202],
        [0.56082198, 0.94549107, 0.54412826],
        [0.00560822, 0.00945491, 0.00544128],
        {"count": 1},
    ),
    "scale_by_stddev": (
        O.scale_by_stddev(),
        [0.98013234, 0.0653057, 0.39361905],
        [0.58050587, 0.04869076, 0.62340991],
        [3.3333325, 3.333255, 3.3333328],
        {
            "mu": [0.05805059, 0.00486908, 0.06234099],
            "nu": [0.03369871, 0.00023708, 0.03886399],
        },
    ),
    "scale_by_trust_ratio": (
        O.scale_by_trust_ratio(min_norm=1.0),
        [0.07719177, 0.1812708, 0.94959977],
        [0.29626032, 0.328152, 0.20388144],
        [0.29626033, 0.328152, 0.20388144],
        {},
    ),
    "scale_by_yogi": (
        O.scale_by_yogi(),
        [0.39152084, 0.86061072, 0.22693509],
        [0.10820288, 0.73034528, 0.6741126],
        [0.95148116, 0.99770474, 0.9974302],
        {
            "mu": [0.01082119, 0.07303543, 0.06741216],
            "nu": [1.2707865e-05, 5.3440424e-04, 4.5542780e-04],
            "count": 1,
        },
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_step_matches_optax(name):
    pair, params, updates, expected, next_state = CASES[name]
    init_fn, update_fn = pair
    params = {"a": np.asarray(params, np.float32)}
    state = init_fn(params)
    new_updates, new_state = update_fn({"a": np.asarray(updates, np.float32)}, state, params)
    np.testing.assert_allclose(new_updates["a"], expected, rtol=1e-5, atol=1e-7)
    if not next_state:
        assert new_state == ()
        return
    (mine,) = new_state
    assert set(mine) == set(next_state)
    for key, value in next_state.items():
        got = mine[key]["a"] if isinstance(mine[key], dict) else mine[key]
        np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-9, err_msg=key)
