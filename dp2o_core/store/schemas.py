"""Column schemas of the run store's parquet tables (documented in docs/formats.md).

Every table has ``group_id`` (the data item's stable id). Tables not listed here (for
example the scores table, one float column per metric) keep the types of the rows given.
"""

from __future__ import annotations

from typing import Any

#: (column, arrow type name, nullable) for each known table.
COLUMNS: dict[str, list[tuple[str, str, bool]]] = {
    "groups": [
        ("group_id", "string", False),
        ("lr", "string", False),
        ("hr", "string", True),
        ("source_lr", "string", True),
        ("source_hr", "string", True),
        ("prompt", "string", True),
        ("crop_top", "int32", False),
        ("crop_left", "int32", False),
        ("lr_height", "int32", False),
        ("lr_width", "int32", False),
        ("seed", "int64", False),
    ],
    "bad_images": [
        ("group_id", "string", False),
        ("path", "string", False),
        ("reason", "string", False),
    ],
    "candidates": [
        ("group_id", "string", False),
        ("candidate", "int32", False),
        ("seed", "int64", False),
        ("image", "string", False),
        ("latent_shard", "string", True),
        ("latent_index", "int32", True),
    ],
    "rewards": [
        ("group_id", "string", False),
        ("candidate", "int32", False),
        ("reward", "float64", False),
    ],
    "pairs": [
        ("group_id", "string", False),
        ("winner", "int32", False),
        ("loser", "int32", False),
        ("winner_reward", "float64", False),
        ("loser_reward", "float64", False),
        ("intra_weight", "float64", False),
        ("inter_weight", "float64", False),
        ("weight", "float64", False),
    ],
}


def arrow_schema(table: str) -> Any:
    """The pyarrow schema of a known table, or None for free-form tables."""
    import pyarrow as pa

    columns = COLUMNS.get(table)
    if columns is None:
        return None
    return pa.schema(
        [pa.field(name, getattr(pa, type_name)(), nullable) for name, type_name, nullable in columns]
    )


def to_arrow(table: str, rows: list[dict[str, Any]]) -> Any:
    """Rows (dicts) as a pyarrow Table with the table's schema; unknown columns are an error."""
    import pyarrow as pa

    schema = arrow_schema(table)
    if schema is None:
        return pa.Table.from_pylist(rows)
    if rows:
        extra = set().union(*rows) - set(schema.names)
        if extra:
            raise ValueError(f"table {table!r} has no columns {sorted(extra)}")
    return pa.Table.from_pylist(rows, schema=schema)
