from typing import Final

# The object that `parse` returns for a body that parse_strict_json rejects.
REJECTED: Final[object]

def parse(body: bytes, max_depth: int, max_members: int, /) -> object:
    """Return the document of `body` if parse_strict_json accepts it, else REJECTED.

    Raises ValueError when max_depth is not between 1 and 500 or max_members
    is less than 1.
    """
