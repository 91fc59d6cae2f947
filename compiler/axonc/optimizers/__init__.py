"""Optimizers (Polaris.Optimizers) and update combinators (Polaris.Updates).

Every optimizer and combinator is an `(init_fn, update_fn)` pair:

    init_fn, update_fn = ax.optimizers.adam(1e-3)
    opt_state = init_fn(params)                       # params: nested dicts or a ModelState
    updates, opt_state = update_fn(grads, opt_state, params)
    params = ax.optimizers.apply_updates(params, updates)

    opt = ax.optimizers.compose(ax.optimizers.centralize(), ax.optimizers.rmsprop())

The built-in optimizers are in `builtin.py`, the combinators in `updates.py`; both
are importable from here under Polaris's names. `ax.train.compile_step` and
`ax.Loop.trainer` take any such pair.
"""

from .builtin import (
    Optimizer,
    adabelief,
    adagrad,
    adam,
    adamax,
    adamw,
    apply_updates,
    clip_by_value,
    get,
    lamb,
    names,
    noisy_sgd,
    normal_noise,
    radam,
    rmsprop,
    sgd,
    yogi,
)
from .updates import (
    Combinator,
    accumulate_gradients,
    add_decayed_weights,
    add_noise,
    as_pair,
    centralize,
    clip,
    clip_by_global_norm,
    compose,
    identity,
    scale,
    scale_by_adam,
    scale_by_belief,
    scale_by_radam,
    scale_by_rms,
    scale_by_rss,
    scale_by_schedule,
    scale_by_state,
    scale_by_stddev,
    scale_by_trust_ratio,
    scale_by_yogi,
    skip_not_finite,
    stateful,
    stateless,
    trace,
)

__all__ = [
    "Combinator",
    "Optimizer",
    "accumulate_gradients",
    "adabelief",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights",
    "add_noise",
    "apply_updates",
    "as_pair",
    "centralize",
    "clip",
    "clip_by_global_norm",
    "clip_by_value",
    "compose",
    "get",
    "identity",
    "lamb",
    "names",
    "noisy_sgd",
    "normal_noise",
    "radam",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_belief",
    "scale_by_radam",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_state",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "sgd",
    "skip_not_finite",
    "stateful",
    "stateless",
    "trace",
    "yogi",
]
