"""The registry: decorator, entry points, lazy loading, errors, and a real plugin
distribution run through the CLI."""

import pytest

from bayeslora.methods import registry
from bayeslora.methods.base import Method
from bayeslora.methods.registry import (
    RegistryError,
    available_methods,
    get_method,
    register_method,
    unregister_method,
)
from tests.cli_helpers import TINY_RUN, bench_subprocess


class _Dummy(Method):
    """A do-nothing method for registry tests."""

    def fit(self, model, train, val=None):
        pass

    def predict_proba(self, data, mode=None):
        raise NotImplementedError


def test_builtins_come_from_entry_points_and_load_lazily():
    methods = available_methods()
    assert methods["adamw"] == "built-in" and methods["ivon"] == "built-in"
    assert get_method("adamw").name == "adamw"
    assert get_method("ivon").__module__ == "bayeslora.methods.ivon"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(RegistryError, match="Did you mean 'ivon'") as err:
        get_method("ivom")
    assert "adamw" in str(err.value)


def test_decorator_registers_and_refuses_a_second_registration():
    try:
        register_method("dummy-test")(_Dummy)
        assert get_method("dummy-test") is _Dummy
        assert available_methods()["dummy-test"] == "in-process"
        with pytest.raises(RegistryError, match="already registered"):
            register_method("dummy-test")(type("Other", (_Dummy,), {}))
        with pytest.raises(RegistryError, match="already registered"):
            register_method("adamw")(type("Other", (_Dummy,), {}))
    finally:
        unregister_method("dummy-test")


def test_decorator_needs_a_method_class():
    with pytest.raises(TypeError, match="Method subclass"):
        register_method("not-a-method")(object)


PLUGIN_CODE = '''
"""A throwaway third-party method: AdamW with a twist, for the plugin test."""
from bayeslora.methods.adamw import AdamW


class Plain(AdamW):
    """Third-party copy of AdamW (plugin test)."""
'''


def _install_fake_distribution(root, dist, module_code, entry_points):
    """What pip would leave on disk: a module and a .dist-info with entry_points.txt."""
    (root / f"{dist}_pkg.py").write_text(module_code)
    info = root / f"{dist}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(
        "[bayeslora.methods]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    )


def test_plugin_distribution_runs_through_the_cli(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site, "thirdparty", PLUGIN_CODE, {"plain": "thirdparty_pkg:Plain"})
    _install_fake_distribution(
        site,
        "brokenplugin",
        "raise ImportError('no such dependency')\n",
        {"broken": "brokenplugin_pkg:Broken"},
    )

    listing = bench_subprocess(["--list-methods"], tmp_path, pythonpath=site)
    assert listing.returncode == 0, listing.stderr
    assert "plain" in listing.stdout and "plugin thirdparty 1.2.3" in listing.stdout
    assert "adamw" in listing.stdout and "built-in" in listing.stdout
    assert "broken" in listing.stdout and "failed to import" in listing.stdout
    assert "no such dependency" in listing.stderr  # the warning

    run = bench_subprocess(
        ["--methods", "plain", *TINY_RUN, "--output-dir", str(tmp_path / "out")],
        tmp_path,
        pythonpath=site,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "plain" in run.stdout and "arc_easy" in run.stdout

    broken = bench_subprocess(
        ["--methods", "broken", "--model", "tiny-random-llama"], tmp_path, pythonpath=site
    )
    assert broken.returncode == 2
    assert "failed to import" in broken.stderr and "no such dependency" in broken.stderr


def test_two_distributions_claiming_one_name_is_an_error(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site, "clash", PLUGIN_CODE, {"adamw": "clash_pkg:Plain"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_entries", {})
    monkeypatch.setattr(registry, "_entry_points_read", False)
    with pytest.raises(RegistryError, match="declared twice"):
        available_methods()


BROKEN_CLASSES = {
    "plain-dataclass-config": (
        "from dataclasses import dataclass\n"
        "@dataclass\nclass Cfg:\n    lr: float = 1e-3\n"
        "class Bad(Base):\n    Config = Cfg\n",
        "must be a dataclass subclassing bayeslora.methods.MethodConfig",
    ),
    "field-without-default": (
        "from dataclasses import dataclass\nfrom bayeslora.methods import MethodConfig\n"
        "@dataclass\nclass Cfg(MethodConfig):\n    lr: float\n"
        "class Bad(Base):\n    Config = Cfg\n",
        "every Config field needs a default; ['lr'] have none",
    ),
    "no-predict-proba": (
        "from bayeslora.methods import Method\n"
        "class Bad(Method):\n    def fit(self, model, train, val=None):\n        pass\n",
        "it does not implement ['predict_proba']",
    ),
    "duplicate-modes": (
        "class Bad(Base):\n    def prediction_modes(self):\n        return ('x', 'x')\n",
        "prediction_modes() must declare distinct names, got ['x', 'x']",
    ),
    "stray-learning-rate": (
        "from dataclasses import dataclass\nfrom bayeslora.methods.adamw import AdamWConfig\n"
        "@dataclass\nclass Cfg(AdamWConfig):\n    learning_rates = ('lr', 'step_size')\n"
        "class Bad(Base):\n    Config = Cfg\n",
        "Config.learning_rates names ['step_size'], which are not Config fields",
    ),
}
BASE = "from bayeslora.methods.adamw import AdamW as Base\n"


@pytest.mark.parametrize("case", sorted(BROKEN_CLASSES))
def test_a_broken_plugin_class_is_named_with_what_to_fix(case, tmp_path, monkeypatch):
    code, message = BROKEN_CLASSES[case]
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site, "badplugin", BASE + code, {"bad": "badplugin_pkg:Bad"})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_entries", {})
    monkeypatch.setattr(registry, "_entry_points_read", False)
    monkeypatch.delitem(__import__("sys").modules, "badplugin_pkg", raising=False)
    with pytest.raises(RegistryError) as err:
        get_method("bad")
    assert "method 'bad' (plugin badplugin 1.2.3, badplugin_pkg:Bad) cannot be used" in str(
        err.value
    )
    assert message in str(err.value)


def test_list_methods_with_two_plugins_claiming_a_name_is_a_clear_error(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install_fake_distribution(site, "one", PLUGIN_CODE, {"twin": "one_pkg:Plain"})
    _install_fake_distribution(site, "two", PLUGIN_CODE, {"twin": "two_pkg:Plain"})
    listing = bench_subprocess(["--list-methods"], tmp_path, pythonpath=site)
    assert listing.returncode == 2
    assert "Traceback" not in listing.stderr
    assert "method name 'twin' is declared twice" in listing.stderr
    assert "uninstall one of them" in listing.stderr


def test_config_values_convert_to_their_annotated_type():
    from dataclasses import dataclass

    from bayeslora.methods import MethodConfig

    @dataclass
    class Cfg(MethodConfig):
        scale: float | None = None
        steps: int = 3

    assert Cfg.from_dict({"scale": "0.5", "steps": "7"}) == Cfg(scale=0.5, steps=7)
    assert Cfg.from_dict({"scale": "none"}).scale is None
    with pytest.raises(ValueError, match="expected float"):
        Cfg.from_dict({"scale": "big"})
