"""Which tables are the application's: the filter Alembic's autogenerate and `alembic check`
apply, shared by the engine's environment and the repository's own."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from alembic.runtime.environment import NameFilterType
from sqlalchemy.schema import SchemaItem

from migration_resource.inspection import PRODUCT_TABLES

IncludeObject = Callable[[SchemaItem, str | None, NameFilterType, bool, SchemaItem | None], bool]


def application_tables_only(ignored: str | Iterable[str] = ()) -> IncludeObject:
    """An `include_object` leaving out this product's tables and the `ignored` ones."""
    names = {ignored} if isinstance(ignored, str) else set(ignored)
    skipped = frozenset(names) | PRODUCT_TABLES

    def include_object(obj: SchemaItem, name: str | None, type_: NameFilterType,
                       reflected: bool, compare_to: SchemaItem | None) -> bool:
        return not (type_ == "table" and name in skipped)

    return include_object
