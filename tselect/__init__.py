"""tselect: targeted instruction selection as content-addressed artifacts."""

__version__ = "0.1.0"
