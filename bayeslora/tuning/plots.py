"""Tuning plots, logged as artifacts of the study run (needs the ``plots`` extra).

- ``plots/history*.png``: optimisation history (one per objective);
- ``plots/importances*.png``: parameter importances;
- ``plots/pareto_front.png``: multi-objective studies;
- ``plots/ess_hess_init.png``: for IVON-like spaces, validation NLL over (ess, hess_init)
  on log axes. A scatter, not a contour: a contour of a few trials is mostly interpolation.
"""

from __future__ import annotations

import warnings

import optuna
from optuna.trial import TrialState

from bayeslora.tuning.objective import METRICS_ATTR
from bayeslora.tuning.tracking import PED_ANOVA_NOTE, importance_targets


def log_plots(tracker, study: optuna.Study, objective_names: list[str]) -> None:
    """Draw and log each plot; a plot that cannot be drawn is skipped with a warning."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            "tuning plots skipped: matplotlib is not installed; "
            "pip install 'bayeslora[plots]' to get them",
            stacklevel=2,
        )
        return
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return
    from optuna.visualization import matplotlib as ovm

    single = len(objective_names) == 1
    importance_target = importance_targets(study, objective_names)
    plots = []
    for i, name in enumerate(objective_names):
        suffix = "" if single else f"_{name}"
        target = None if single else (lambda t, i=i: t.values[i])
        plots.append(
            (
                f"plots/history{suffix}.png",
                lambda target=target, name=name: ovm.plot_optimization_history(
                    study, target=target, target_name=f"validation {name}"
                ),
            )
        )
        plots.append(
            (
                f"plots/importances{suffix}.png",
                lambda name=name: ovm.plot_param_importances(
                    study, target=importance_target[name], target_name=f"validation {name}"
                ),
            )
        )
    if not single:
        plots.append(
            (
                "plots/pareto_front.png",
                lambda: ovm.plot_pareto_front(study, target_names=objective_names),
            )
        )
    if any("ess" in t.params and "hess_init" in t.params for t in study.trials):
        plots.append(("plots/ess_hess_init.png", lambda: _ess_hess_init(study)))

    for artifact, draw in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.filterwarnings("ignore", message=PED_ANOVA_NOTE)
                axes = draw()
            figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
            figure.tight_layout()
            tracker.log_figure(figure, artifact)
            plt.close(figure)
        except Exception as err:  # a plot must never fail the tuning
            warnings.warn(f"tuning plot {artifact} skipped: {err!r}", stacklevel=2)


def _ess_hess_init(study: optuna.Study):
    """Validation NLL of each completed trial at its (ess, hess_init), log-log."""
    import matplotlib.pyplot as plt

    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "ess" in t.params and "hess_init" in t.params and METRICS_ATTR in t.user_attrs
    ]
    if not trials:
        raise ValueError("no completed trial has both ess and hess_init")
    figure, ax = plt.subplots(figsize=(6, 4.5))
    points = ax.scatter(
        [t.params["ess"] for t in trials],
        [t.params["hess_init"] for t in trials],
        c=[t.user_attrs[METRICS_ATTR]["nll"] for t in trials],
        cmap="viridis_r",  # bright = low NLL = good
        s=40,
        edgecolors="black",
    )
    for t in trials:
        ax.annotate(str(t.number), (t.params["ess"], t.params["hess_init"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ess (λ)")
    ax.set_ylabel("hess_init (v0)")
    ax.set_title("validation NLL of completed trials (number = trial)")
    figure.colorbar(points, ax=ax, label="validation NLL")
    return ax
