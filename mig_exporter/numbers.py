"""Whole numbers typed by a user (flags, GPU indices), read strictly.

``str.isdigit`` accepts characters such as ``²`` that ``int`` then refuses with a traceback, and
``int`` accepts other scripts' digits (``٥``); a flag value is plain ASCII or it is refused.
"""


def is_whole_number(text: str) -> bool:
    """True for ASCII digits only (``"12"``), false for ``"²"``, ``"٥"``, ``"-1"`` or ``""``."""
    return text.isascii() and text.isdigit()
