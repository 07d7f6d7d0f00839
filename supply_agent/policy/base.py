"""The pieces every playbook schema module shares: the strict, frozen base model (an unknown key is an
error, never ignored), the error a validator raises to point the loader at a field below it, and the
plain string constraints used throughout.

It exists so that units, conditions, steps, playbooks and limits can each live in their own module
without importing one another for these.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

NonEmptyStr = Annotated[str, Field(min_length=1)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def fail(message: str, *at: str | int) -> PydanticCustomError:
    """An error whose location is ``at`` below the field or model that raised it (the loader appends
    ``at`` to pydantic's location to find the YAML line)."""
    return PydanticCustomError("playbook", message, {"at": at})
