"""The MLflow UI as a user sees it, on a store written by a small bench run.

One bench subprocess on the tiny model (adamw and ivon: three result runs) writes a SQLite
store; the store is checked for what the UI reads (experiment kind, descriptions, dataset
inputs, run times, metric order); then a real ``mlflow server`` (127.0.0.1, one worker)
serves it to headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
selenium; nothing is downloaded), which opens the runs page, the compare view and the
parent run's artifacts. The browser tests skip, saying so, only where the browser is not
installed (``.ci/run`` installs it).

``BAYESLORA_UI_SCREENSHOTS=DIR`` keeps the compare view's screenshot, ``mlflow-compare.png``
(the README's is ``docs/images/mlflow-compare.png``); otherwise it goes to a tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bayeslora.bench.store import EXPERIMENT_DESCRIPTION, RESULTS_VIEW
from bayeslora.tracking.mlflow_tracker import (
    DIGEST_LENGTH,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    NOTE_TAG,
    ui_path,
)
from tests.cli_helpers import bench_subprocess

ARGS = [
    "--model",
    "tiny-random-llama",
    "--quick",
    "--methods",
    "adamw,ivon",
    "--hp",
    "ivon.test_samples=2",
    "--steps",
    "5",
    "--limit-train",
    "32",
    "--limit-eval",
    "16",
    "--no-progress",
    "--no-save-adapters",
]
MODES = ["adamw", "ivon", "ivon@mean"]
CALIBRATION = ["accuracy", "ece", "nll", "brier"]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60  # for a page to render (2 shared cores)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The bench's output directory and what its store holds, read with MLflow's client."""
    from mlflow import MlflowClient

    out = tmp_path_factory.mktemp("ui-bench")
    workdir = out / "workdir"  # the bench runs here, its output goes elsewhere
    workdir.mkdir()
    done = bench_subprocess(
        [*ARGS, "--output-dir", str(out / "runs")],
        cwd=workdir,
        pythonpath=os.environ.get("PYTHONPATH"),  # this checkout, where it is not installed
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{out / 'runs' / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bayeslora")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("bayeslora.kind") == "bench"]
    results = {r.data.tags["bayeslora.mode"]: r for r in runs if r is not parent}
    return {
        "out": out,
        "workdir": workdir,
        "uri": uri,
        "client": client,
        "experiment": experiment,
        "parent": parent,
        "results": results,
        "stderr": done.stderr,
    }


def test_the_store_holds_what_the_ui_reads(store):
    experiment, parent, results = store["experiment"], store["parent"], store["results"]
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert experiment.tags[NOTE_TAG] == EXPERIMENT_DESCRIPTION
    # The store's Default experiment keeps its artifacts beside ours, not in the workdir.
    default = store["client"].get_experiment("0")
    assert default.artifact_location.startswith((store["out"] / "runs").as_uri())
    assert not (store["workdir"] / "mlruns").exists()
    assert "bench-" in parent.info.run_name and "adamw, ivon" in parent.data.tags[NOTE_TAG]
    assert sorted(results) == MODES
    for mode, run in results.items():
        assert run.info.run_name == f"{mode}/arc_easy/seed0"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert f"**{mode}** on **arc_easy**" in run.data.tags[NOTE_TAG]
        # the calibration metrics first: the UI offers the first-logged metric first
        assert list(run.data.metrics)[:4] == CALIBRATION
        # the run spans its cell: its fit and its predictions, not the moment it was written
        metrics, info = run.data.metrics, run.info
        assert info.end_time - info.start_time >= 1000 * metrics["train_time_s"] - 1
        assert parent.info.start_time <= info.start_time <= info.end_time
        assert info.end_time <= parent.info.end_time
        inputs = {
            {t.key: t.value for t in i.tags}["mlflow.data.context"]: i.dataset
            for i in run.inputs.dataset_inputs
        }
        assert inputs["eval"].name == "arc_easy/validation"
        assert json.loads(inputs["eval"].profile) == {"num_rows": 16}
        assert inputs["training"].name == "arc_easy/test"
        assert len(inputs["eval"].digest) == DIGEST_LENGTH
    # the cells of ivon (two modes) share one span; the description names the other mode
    ivon, mean = results["ivon"], results["ivon@mean"]
    assert (ivon.info.start_time, ivon.info.end_time) == (mean.info.start_time, mean.info.end_time)
    assert "other modes: ivon@mean" in ivon.data.tags[NOTE_TAG]
    # the bench says where to look: the runs table in a view with the calibration metrics
    assert ui_path(experiment.experiment_id, RESULTS_VIEW) in store["stderr"]


# --- in the browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(store, tmp_path_factory):
    """``mlflow server`` on the store: its base URL; stopped (SIGTERM) at the end."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cwd = tmp_path_factory.mktemp("ui-server")
    log = open(cwd / "server.log", "w")  # noqa: SIM115 (closed in the finalizer)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store["uri"]]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its web worker goes with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (cwd / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server not healthy after 120 s"
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        pytest.skip(
            f"no browser: {', '.join(missing)} not installed (Debian packages chromium and "
            "chromium-driver; .ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not fetch a browser
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1600,1000")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    wanted = os.environ.get("BAYESLORA_UI_SCREENSHOTS")
    directory = Path(wanted) if wanted else tmp_path_factory.mktemp("ui-screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _open(browser, url: str, ready):
    """Load ``url`` and wait until ``ready(browser)`` is truthy; its value."""
    browser.get(url)
    return _wait(browser, ready)


def _wait(browser, ready, timeout: float = WAIT_S):
    """Wait until the page, rendered by React after loading, satisfies ``ready``."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.25).until(ready)


def _text(browser) -> str:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.TAG_NAME, "body").text


def _texts(within, css: str) -> list[str]:
    """The texts of the elements matching ``css`` in ``within`` (the page or an element)."""
    from selenium.webdriver.common.by import By

    return [e.text for e in within.find_elements(By.CSS_SELECTOR, css)]


def _close_assistant(browser) -> None:
    """MLflow's assistant panel takes a third of the window: closed for the screenshots."""
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(
        By.CSS_SELECTOR, "button[data-component-id='mlflow.assistant.chat_panel.close']"
    ):
        button.click()


def _seconds(shown: str) -> float:
    """MLflow's duration text ("850ms", "1.6s", "2.1min") in seconds."""
    value, unit = re.fullmatch(r"([\d.]+)\s*(ms|s|min|h)", shown.strip()).groups()
    return float(value) * {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}[unit]


def test_the_runs_page_shows_the_runs_their_data_and_durations(store, browser, server):
    from selenium.webdriver.common.by import By

    experiment_id = store["experiment"].experiment_id
    parent = store["parent"]
    link = f"//a[normalize-space(.)='{parent.info.run_name}']"
    page = server + ui_path(experiment_id, RESULTS_VIEW)  # as the bench prints it
    _open(browser, page, lambda b: b.find_elements(By.XPATH, link))
    # the model-training layout: the runs table, not the GenAI overview of traces
    assert "/runs" in browser.current_url and "workflowType=machine_learning" in (
        browser.current_url
    )
    assert "Results of the bayeslora benchmark" in _text(browser)
    browser.find_element(
        By.XPATH, f"{link}/ancestor::*[contains(@class, 'ag-cell-value')][1]//button"
    ).click()  # expand the bench run: its results appear under it
    results = store["results"]
    names = [run.info.run_name for run in results.values()]
    _wait(
        browser,
        lambda b: all(b.find_elements(By.XPATH, f"//a[normalize-space(.)='{n}']") for n in names),
    )
    rows = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "[role=row][row-id]"):
        rows.setdefault(row.get_attribute("row-id"), []).append(row)
    for run in results.values():
        cells = {
            c.get_attribute("col-id"): c.text
            for row in rows[run.info.run_id]
            for c in row.find_elements(By.CSS_SELECTOR, "[col-id]")
        }
        eval_input = next(
            i.dataset for i in run.inputs.dataset_inputs if any(t.value == "eval" for t in i.tags)
        )
        assert f"{eval_input.name} ({eval_input.digest})" in cells["attributes.`Dataset`"]
        shown, stored = _seconds(cells["duration"]), (run.info.end_time - run.info.start_time)
        assert shown == pytest.approx(stored / 1000, rel=0.1, abs=0.06), cells["duration"]
        for name in CALIBRATION:  # the view's metric columns
            shown = float(cells[f"metrics.`{name}`"])
            assert shown == pytest.approx(run.data.metrics[name], abs=6e-4), name


# The compare view's metrics table: two virtualized grids (names; values), rows 45 px apart,
# only those near the visible ones rendered. A metric's values are the value cells at its
# name's height, left to right; not rendered yet: scroll both grids (returns their height).
_METRIC_ROW_JS = """
const [name, scroll] = arguments;
const link = document.querySelector("a[title='Plot chart']");
if (!link) return null;
const names = link.closest('.ReactVirtualized__Grid');
const values = names.parentElement.nextElementSibling.querySelector('.ReactVirtualized__Grid');
if (scroll !== null) { names.scrollTop = values.scrollTop = scroll; return values.scrollHeight; }
const row = [...names.querySelectorAll("a[title='Plot chart']")]
  .find(a => a.textContent.trim() === name);
if (!row) return null;
const top = row.parentElement.style.top;
return [...values.querySelectorAll('div')]
  .filter(c => c.style.top === top && c.style.left !== '')
  .sort((a, b) => parseFloat(a.style.left) - parseFloat(b.style.left))
  .map(c => c.textContent.trim());
"""


def _compared_values(browser, metric: str) -> list[str]:
    """The compare view's values of ``metric``, one per run, as shown."""
    from selenium.common.exceptions import TimeoutException

    height = _wait(browser, lambda b: b.execute_script(_METRIC_ROW_JS, metric, 0))
    for scroll in range(0, int(height) + 1, 135):
        browser.execute_script(_METRIC_ROW_JS, metric, scroll)
        try:
            return _wait(browser, lambda b: b.execute_script(_METRIC_ROW_JS, metric, None), 3)
        except TimeoutException:  # not rendered at this height: scroll on
            continue
    raise AssertionError(f"metric {metric} not in the compare view's metrics table")


def test_the_compare_view_puts_the_calibration_metrics_first(store, browser, server, screenshots):
    from selenium.webdriver.common.by import By

    experiment_id = store["experiment"].experiment_id
    results = store["results"]
    ids = [results[m].info.run_id for m in MODES]
    url = (
        f"{server}/#/compare-runs?runs={json.dumps(ids, separators=(',', ':'))}"
        f"&experiments={json.dumps([experiment_id])}&workflowType=machine_learning"
    )
    _open(browser, url, lambda b: f"Comparing {len(ids)} Runs" in _text(b))
    text = _text(browser)
    for run in results.values():
        assert run.info.run_name in text
    # the default plot (parallel coordinates) plots the first metric the runs share
    metrics_select = browser.find_element(
        By.XPATH, "//*[normalize-space(.)='Metrics:']/following-sibling::*[1]"
    )
    assert metrics_select.text.split() == ["accuracy"]
    # the metrics table: each calibration metric with each run's value, in run order
    for name in CALIBRATION:
        shown = [float(v) for v in _compared_values(browser, name)]
        stored = [results[m].data.metrics[name] for m in MODES]
        assert shown == pytest.approx(stored, abs=6e-4), name
    # what a reader compares: the plot set to the mode against the calibration metrics
    _choose_in_plot(browser, {"Parameters:": ["mode"], "Metrics:": CALIBRATION})
    titles = "text.axis-title"
    try:
        _wait(browser, lambda b: _texts(b, titles) == ["mode", *CALIBRATION], 20)
    except Exception:
        browser.save_screenshot(str(screenshots / "mlflow-compare-failed.png"))
        raise AssertionError(f"the plot's axes: {_texts(browser, titles)}") from None
    _close_assistant(browser)
    browser.save_screenshot(str(screenshots / "mlflow-compare.png"))


PICKED = ".du-bois-light-select-selection-item-content"  # a select box's chosen items


def _choose_in_plot(browser, choices: dict[str, list[str]]) -> None:
    """Clear the parallel coordinates plot's selections, then pick ``choices`` (label of
    the select box above it -> the keys to pick), as a user would: type, click."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.find_element(By.XPATH, "//button[normalize-space(.)='Clear All']").click()
    for label, keys in choices.items():
        box = browser.find_element(
            By.XPATH, f"//*[normalize-space(.)='{label}']/following-sibling::*[1]"
        )
        box.click()  # opens its list, which stays open while keys are picked
        typed = box.find_element(By.CSS_SELECTOR, "input[role=combobox]")
        for key in keys:
            typed.send_keys(key)
            option = f".du-bois-light-select-item-option[title='{key}']"
            _wait(browser, lambda b, css=option: b.find_elements(By.CSS_SELECTOR, css))[0].click()
            _wait(browser, lambda b, k=key, box=box: k in _texts(box, PICKED))
        typed.send_keys(Keys.ESCAPE)


def test_the_parent_run_holds_the_tables_and_plots(store, browser, server):
    from selenium.webdriver.common.by import By

    parent = store["parent"]
    url = (
        f"{server}/#/experiments/{store['experiment'].experiment_id}/runs/"
        f"{parent.info.run_id}/artifacts?workflowType=machine_learning"
    )
    _open(browser, url, lambda b: "results.txt" in _text(b))
    text = _text(browser)
    assert "results.json" in text and "comparison_arc_easy.json" in text
    plots = [
        a.path
        for a in store["client"].list_artifacts(parent.info.run_id, "plots")
        if a.path.endswith(".png")
    ]
    assert plots, "the bench logs its reliability diagrams under plots/ on the parent run"
    browser.find_element(By.XPATH, "//*[normalize-space(text())='plots']").click()
    name = Path(plots[0]).name
    _wait(browser, lambda b: name in _text(b))
