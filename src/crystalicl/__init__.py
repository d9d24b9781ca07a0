"""crystalicl: few-shot crystal structure generation with language models (CrystalICL, measured)."""

from crystalicl.errors import CrystalICLError, DatasetError, EncodeError, ParseError
from crystalicl.text import FORMATS, decode, encode

__version__ = "0.1.0"
__all__ = ["encode", "decode", "FORMATS", "ParseError", "EncodeError", "DatasetError", "CrystalICLError"]

import os as _os

_os.environ.setdefault("SPGLIB_WARNING", "OFF")  # spglib's "ssm_get_exact_positions failed" noise
