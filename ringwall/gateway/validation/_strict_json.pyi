from collections.abc import Callable
from typing import Any, Final, Protocol, final

# The object that `parse` returns for a body that parse_strict_json rejects.
REJECTED: Final[object]

class SubValidator(Protocol):
    def is_valid(self, instance: Any, /) -> bool: ...

@final
class CompiledSchema:
    """A JSON Schema compiled by `compile_schema`, for `check`."""

def parse(body: bytes, max_depth: int, max_members: int, /) -> object:
    """Return the document of `body` if parse_strict_json accepts it, else REJECTED.

    Raises ValueError when max_depth is not between 1 and 500 or max_members
    is less than 1.
    """

def compile_schema(
    schema: object, sub_validator_factory: Callable[[dict[str, Any]], SubValidator], /
) -> CompiledSchema | None:
    """Compile `schema` for `check`, or return None when it uses a keyword outside the subset.

    `sub_validator_factory` takes a schema of one keyword, {"pattern": ...}
    or {"format": ...}, and returns a validator whose is_valid(str) returns
    what the full validator returns for that keyword.
    """

def check(body: bytes, compiled: CompiledSchema, max_depth: int, max_members: int, /) -> bool:
    """Return True only if parse accepts `body` and its document is valid for `compiled`.

    False means rejected or not decided: run parse and the full validator.
    Raises ValueError for the limits that parse rejects.
    """
