"""The refusals: errors whose message is the one line a user sees (torch-free to import)."""


class ConfigError(ValueError):
    """A config value outside what is allowed; the message is one line: key, value and rule."""


class DataError(RuntimeError):
    """Data that cannot be loaded (dataset files, a cache); one line naming them and the fix.
    Defined here, torch-free, so the CLI can refuse with it without importing ``data``."""
