"""The registry of config tables: every section and relevance method registers its settings here.

A section registers its ``[sections.<name>]`` table (and the checks of it that need the whole
config) with :mod:`generator.sections`; a relevance method its ``[methods.<name>]`` table when
:func:`generator.relevance.registry.register_method` registers it. :mod:`generator.config.loading` assembles the
config's schema from what is registered here, without importing the code that registered it; the
package's ``__init__`` imports the built-in sections and methods, so every entry point sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

if TYPE_CHECKING:
    from .settings import GalleryConfig, SectionSettings

__all__ = ["Table", "TableKind", "register_table", "registered_tables", "unregister_table"]

#: The config's registered tables: ``[sections.<name>]`` and ``[methods.<name>]``.
TableKind = Literal["sections", "methods"]


@dataclass(frozen=True)
class Table:
    """One registered table.

    Attributes:
        name: the table's key (``[<kind>.<name>]``).
        settings: its settings class (``enabled`` plus parameters, with their limits).
        check: checks that need the rest of the config (files, folders): ``check(config, source)``,
            raising :class:`generator.config.settings.ConfigError`; None for none.
    """

    name: str
    settings: type[SectionSettings]
    check: Callable[[GalleryConfig, Path | None], None] | None = None


_TABLES: dict[str, dict[str, Table]] = {"sections": {}, "methods": {}}


def register_table(kind: TableKind, table: Table) -> None:
    """Add ``table`` under ``[kind]`` (a name already taken by another settings class is refused)."""
    tables = _TABLES[kind]
    if table.name in tables and tables[table.name].settings is not table.settings:
        raise ValueError(f"a [{kind}.{table.name}] table is already registered "
                         f"({tables[table.name].settings.__name__})")
    tables[table.name] = table


def unregister_table(kind: TableKind, name: str) -> None:
    """Remove ``[kind.name]`` (for tests and plugins that come and go)."""
    _TABLES[kind].pop(name, None)


def registered_tables(kind: TableKind) -> tuple[Table, ...]:
    """The tables registered under ``[kind]``, in registration order."""
    return tuple(_TABLES[kind].values())
