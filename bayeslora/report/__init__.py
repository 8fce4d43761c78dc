"""Reports from an MLflow store: the paper-style table, the differences to a baseline, the
over-seed summaries and the plots, for any selection of stored results, without retraining.

``python -m bayeslora.report`` (:mod:`~bayeslora.report.cli`) reads results with
:mod:`~bayeslora.report.collect` and writes them with :func:`~bayeslora.report.build.build_report`;
the bench calls the same function at the end of a run. This package never imports
``bayeslora.bench`` (the bench imports it).
"""
