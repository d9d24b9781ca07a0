"""Typed errors: every failure a user can cause has its own class and a message saying what and where."""


class CrystalICLError(Exception):
    """Base class of the package's errors."""


class ParseError(CrystalICLError, ValueError):
    """Crystal text that is malformed or inconsistent (the decoder never returns a silently wrong structure)."""


class EncodeError(CrystalICLError, ValueError):
    """A structure that cannot be written as text (disordered, no symmetry found, ...)."""


class DatasetError(CrystalICLError, RuntimeError):
    """A benchmark split that is unknown, absent offline, or unreadable."""


class ConfigError(CrystalICLError, ValueError):
    """Settings that cannot make a run (a budget of nothing, options that exclude each other): says what to change."""
