"""Which SMART scopes grant the write-back its writes (kept light: the settings models import it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: The resource types the write-back creates and updates (pipelines/writeback.py).
WRITTEN_TYPES: tuple[str, ...] = ("Device", "Observation", "Flag", "Task")


class WritebackError(ValueError):
    """The write-back is misconfigured (scopes missing, no client); the message says which."""


def scope_grants_write(scope: str, resource_type: str) -> bool:
    """Whether one SMART scope grants creating and updating `resource_type`.

    SMART v1 `system/Observation.write` or `.*`, v2 `system/Observation.cu` (any of `cruds` that
    includes both c and u); `*` as the type grants every type. Read scopes never do.
    """
    try:
        _, rest = scope.split("/", 1)
        rtype, perms = rest.split(".", 1)
    except ValueError:
        return False
    if rtype not in (resource_type, "*"):
        return False
    if perms in ("write", "*"):
        return True
    perms = perms.split("?", 1)[0]
    return set("cu") <= set(perms) and set(perms) <= set("cruds")


def check_scopes(scopes: Sequence[str], resource_types: Iterable[str] = WRITTEN_TYPES) -> None:
    """Raise `WritebackError` unless every written type is granted by an explicit write scope."""
    missing = [t for t in resource_types if not any(scope_grants_write(s, t) for s in scopes)]
    if missing:
        raise WritebackError(
            f"write-back needs explicit write scopes for {', '.join(missing)} "
            "(e.g. system/Observation.cu); none granted"
        )
