"""Errors tunelab raises on bad input. Each message names the offending file, line, key or path."""


class TunelabError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class ConfigError(TunelabError):
    """An experiment config is malformed: unknown key, wrong type, bad value."""


class DataError(TunelabError):
    """A data file cannot be read or does not have the expected shape."""


class ModelError(TunelabError):
    """A model, tokenizer or adapter cannot be found or does not match."""


class RunDirError(TunelabError):
    """A run directory exists already, or is incomplete, or cannot be written."""


class TrainingError(TunelabError):
    """Training cannot go on (e.g. a non-finite loss)."""


class ExportError(TunelabError):
    """A model cannot be exported to the requested format (method, architecture or tokenizer not supported)."""
