"""Fast bulk SQL for hot write paths: prepared INSERT/UPDATE run with executemany, chunked IN lookups.

Generic over Django models; nothing here knows what the rows mean. They exist because Django's
own bulk_create and bulk_update cost most of a batch's time on the ingester's write path.
"""

from functools import partial

from django.db import connections

SQL_CHUNK = 500  # ids per IN (...) list: well below every backend's parameter limit

# Fields whose Python values (str, int, bool, None) every database driver takes as they are;
# the others (datetimes, JSON) go through the field's own preparation for the backend.
_NATIVE_FIELDS = {"CharField", "IntegerField", "BigIntegerField", "BooleanField", "FloatField", "ForeignKey"}


def preparers(db, fields: list) -> list:
    """One function per field that turns a Python value into a parameter for `db`'s driver."""

    def native(value):
        return value

    return [
        native if f.get_internal_type() in _NATIVE_FIELDS else partial(f.get_db_prep_save, connection=db)
        for f in fields
    ]


def insert_rows(model, field_names: list[str], rows: list[tuple]) -> None:
    """Insert rows of values (in field_names order) with one prepared INSERT, executemany.

    Not QuerySet.bulk_create: building a model instance and preparing every field through the
    compiler cost ~100 us per sample row, most of a batch's time; this path costs a tenth.
    """
    if not rows:
        return
    db = connections[model.objects.db]
    quote = db.ops.quote_name
    fields = [model._meta.get_field(name) for name in field_names]
    prepare = preparers(db, fields)
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(model._meta.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    params = [[p(value) for p, value in zip(prepare, row, strict=True)] for row in rows]
    with db.cursor() as cursor:
        cursor.executemany(sql, params)


def update_rows(model, rows: list, field_names: list[str]) -> None:
    """Write `field_names` of existing `rows` back with one prepared UPDATE executed per row.

    Not QuerySet.bulk_update: its CASE WHEN expressions took ~85 % of a batch's time (Django
    builds and compiles an expression per row and field), where executemany reuses one statement.
    """
    if not rows:
        return
    db = connections[model.objects.db]
    quote = db.ops.quote_name
    fields = [model._meta.get_field(name) for name in field_names]
    prepare = preparers(db, fields)
    sql = "UPDATE {} SET {} WHERE {} = %s".format(
        quote(model._meta.db_table),
        ", ".join(f"{quote(f.column)} = %s" for f in fields),
        quote(model._meta.pk.column),
    )
    pairs = list(zip(prepare, fields, strict=True))
    params = [[p(getattr(row, f.attname)) for p, f in pairs] + [row.pk] for row in rows]
    with db.cursor() as cursor:
        cursor.executemany(sql, params)


def fetch_in(queryset, field_name: str, values) -> list:
    """queryset.filter(field__in=values), in chunks that stay under every backend's parameter limit."""
    values = list(values)
    rows = []
    for start in range(0, len(values), SQL_CHUNK):
        rows.extend(queryset.filter(**{f"{field_name}__in": values[start : start + SQL_CHUNK]}))
    return rows
