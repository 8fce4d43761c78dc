"""bayeslora: does a Bayesian method make a LoRA-finetuned language model more accurate
and better calibrated? A benchmark harness built on transformers, peft, torchmetrics,
laplace-torch, optuna and mlflow.

Importing this package is cheap and needs none of the optional extras; the heavy parts
are imported by the modules that use them.
"""

__version__ = "0.1.0"
