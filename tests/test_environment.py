"""The set-up must leave an environment where everything imports (the torchvision trap)."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module", ["torchmetrics", "laplace", "transformers.models.bert.modeling_bert", "peft"]
)
def test_stack_imports(module):
    importlib.import_module(module)


def test_bert_model_class_resolves():
    """transformers' lazy BertModel import is what the CUDA torchvision broke."""
    from transformers import BertModel

    assert BertModel.__name__ == "BertModel"


def test_import_bayeslora_needs_no_optional_extra():
    code = (
        "import sys, bayeslora, bayeslora.methods.registry, bayeslora.metrics, bayeslora.tasks;"
        "heavy = [m for m in ('laplace', 'bitsandbytes', 'gguf', 'mlflow', 'optuna') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
