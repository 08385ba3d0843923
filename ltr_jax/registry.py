"""The one registry type: a config switch's name -> its entry (a leaf module).

Every string switch of the config (``data.name``, ``<section>.sampler``, ``<section>.augment``,
``<section>.loss``, ``stage1.loss``, ``model.encoder``) is a key of one `Registry`. A registry
is a dict (register an entry with ``REGISTRY["name"] = entry``), so config validation reads
its keys; an unknown name fails with one line listing the valid ones; ``label`` gives an
entry's name in reports. A family of names (``tfds:<name>``) is a prefix whose entry is made
from the rest of the name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ltr_jax.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, ValueError):
    """A name that no registry entry has (the message lists the valid ones)."""


class Registry(dict[str, T]):
    """``name -> entry`` for one config switch; ``registry[name]`` of an unknown name fails.

    Args:
      what: the switch's name in errors (``"sampler"``, ``"stage1.loss"``).
      entries: the built-in entries.
      prefixes: ``prefix -> make(rest) -> entry``: a family of names (``"tfds:"``).
      hint: appended to the unknown-name error (how to register one).
      sort_names: list the valid names sorted (else in registration order).
    """

    def __init__(
        self,
        what: str,
        entries: Mapping[str, T] | Iterable[tuple[str, T]] = (),
        *,
        prefixes: Mapping[str, Callable[[str], T]] | None = None,
        hint: str = "",
        sort_names: bool = False,
    ):
        super().__init__(entries)
        self.what, self.hint, self.sort_names = what, hint, sort_names
        self.prefixes = dict(prefixes or {})

    def __missing__(self, name: str) -> T:
        for prefix, make in self.prefixes.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                return make(name[len(prefix) :])
        hint = f" {self.hint}" if self.hint else ""
        raise UnknownNameError(
            f"Unknown {self.what} {name!r}; valid: {', '.join(self.names())}{hint}."
        )

    def names(self) -> tuple[str, ...]:
        """Every valid name (a prefix family as ``<prefix><name>``)."""
        keys = sorted(self) if self.sort_names else list(self)
        return (*keys, *(f"{p}<name>" for p in self.prefixes))

    def valid(self, name: str) -> bool:
        """Whether ``name`` is registered (or belongs to a prefix family)."""
        return name in self or any(name.startswith(p) and len(name) > len(p) for p in self.prefixes)

    def label(self, name: str, *args: Any) -> str:
        """``entry.label(*args)``: the entry's name in reports; a name not registered in this
        process (a workdir written by another) is labelled by itself."""
        entry = self.get(name)
        return entry.label(*args) if entry is not None else name
