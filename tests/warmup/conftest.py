"""The warmup tests share the featurize tests' tiny-model fixtures and one-thread setting."""

from tests.featurize.conftest import _one_thread  # noqa: F401  (autouse fixture)
