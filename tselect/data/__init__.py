"""Instruction data: parsing user files, the built-in sets, and tokenization with label masks."""

from tselect.data.formats import load_dataset
from tselect.data.types import Dataset, Example, example_id

__all__ = ["Dataset", "Example", "example_id", "load_dataset"]
