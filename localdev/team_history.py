"""Write a long, team-style Alembic history: what a real service's migrations look like after years.

`synthetic_history` writes revisions that only leave a trace; real histories are different,
and the engine must cope with what they really do. This one writes, in the style of Alembic's
autogenerate output as teams edit it (Flask-Migrate's `batch_alter_table` included):

- tables created with constraint names from the naming convention, either spelled with
  `op.f(...)` or left `None` for the convention to fill in (`localdev.history_env`: the
  folder's own env.py carries it for plain Alembic; the engine, which does not run that
  file, takes `history_env.NAMING_CONVENTION` as its naming-convention setting);
- nullable columns, indexes and foreign keys added over time;
- `CREATE INDEX CONCURRENTLY` inside `autocommit_block()` (about 19 per 264 revisions);
- data migrations that READ rows (`op.get_bind().execute(...).fetchone()`, loops over
  `conn.execute(sa.select(table))` updating each row), about 11 per 264 revisions;
- seed data (`op.bulk_insert`, `INSERT ... SELECT`) early on, so the reads find rows: each
  data migration raises when it finds none, so a successful upgrade proves they read data;
- an enum type created with its table and extended twice with `ALTER TYPE ... ADD VALUE`
  inside `autocommit_block()` (PostgreSQL cannot use a value added in the same transaction);
- branches that split and merge again (`down_revision = (a, b)`), one merge per 130 revisions
  (at least one), so the history has exactly one head.

Every revision has a working downgrade (an added enum value is removed by recreating the
type). Ids are deterministic, like `synthetic_history.revision_id`, so two runs write the same
files.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from localdev.history_env import write_script_directory

DEFAULT_COUNT = 264
DEFAULT_SEED_ROWS = 25
# Below this there is no room for the preamble, a branch and every feature at least once.
MIN_COUNT = 24
# Feature densities of the 264-revision history the benchmark uses; shorter or longer
# histories get the same proportions.
REFERENCE_COUNT = 264
CONCURRENT_INDEXES = 19
DATA_MIGRATIONS = 11
MIN_DATA_MIGRATIONS = 3  # one of each kind of read, even in a short history
REVISIONS_PER_MERGE = 130
ENUM_VALUES = ("pending", "paid", "shipped")
ENUM_ADDED = ("refunded", "cancelled")
ENUM_NAME = "order_status"
# One revision every six days from here: 264 revisions span about four years.
FIRST_DATE = datetime(2019, 3, 4, 10, 0)
DAYS_BETWEEN = 6

# Kinds of revision, as TeamHistory.kinds reports them.
PREAMBLE = "preamble"
CREATE_TABLE = "create_table"
ADD_COLUMN = "add_column"
ADD_INDEX = "add_index"
ADD_FOREIGN_KEY = "add_foreign_key"
SEED = "seed"
CONCURRENT_INDEX = "concurrent_index"
ENUM_VALUE = "enum_add_value"
DATA = "data_migration"
MERGE = "merge"
# What an ordinary trunk revision does, in turn: tables grow more often than they appear.
ORDINARY_CYCLE = (CREATE_TABLE, ADD_COLUMN, ADD_INDEX, SEED, ADD_FOREIGN_KEY, ADD_COLUMN,
                  ADD_COLUMN)
BRANCH_CYCLE = (CREATE_TABLE, ADD_COLUMN, ADD_INDEX, SEED)

# (table, singular for its foreign-key columns): a service's nouns.
TABLE_NAMES = (
    ("organizations", "organization"), ("projects", "project"), ("memberships", "membership"),
    ("products", "product"), ("categories", "category"), ("invoices", "invoice"),
    ("invoice_lines", "invoice_line"), ("payments", "payment"), ("refunds", "refund"),
    ("plans", "plan"), ("subscriptions", "subscription"), ("coupons", "coupon"),
    ("addresses", "address"), ("shipments", "shipment"), ("carriers", "carrier"),
    ("warehouses", "warehouse"), ("stock_levels", "stock_level"), ("suppliers", "supplier"),
    ("purchase_orders", "purchase_order"), ("notifications", "notification"),
    ("email_templates", "email_template"), ("webhooks", "webhook"),
    ("webhook_deliveries", "webhook_delivery"), ("api_keys", "api_key"),
    ("sessions", "session"), ("audit_events", "audit_event"), ("comments", "comment"),
    ("attachments", "attachment"), ("tags", "tag"), ("taggings", "tagging"),
    ("feature_flags", "feature_flag"), ("experiments", "experiment"), ("reports", "report"),
    ("exports", "export"), ("imports", "import"), ("teams", "team"),
    ("invitations", "invitation"), ("roles", "role"), ("permissions", "permission"),
    ("devices", "device"), ("push_tokens", "push_token"), ("tickets", "ticket"),
    ("ticket_messages", "ticket_message"), ("announcements", "announcement"),
)
# (column, SQLAlchemy type, can take a btree index): what later revisions add, nullable.
COLUMN_POOL = (
    ("external_ref", "sa.String(length=64)", True), ("notes", "sa.Text()", False),
    ("archived_at", "sa.DateTime(timezone=True)", True), ("display_name",
                                                          "sa.String(length=120)", True),
    ("source", "sa.String(length=32)", True), ("priority", "sa.Integer()", True),
    ("attributes", "postgresql.JSONB(astext_type=sa.Text())", False),
    ("is_active", "sa.Boolean()", True), ("slug", "sa.String(length=140)", True),
    ("region", "sa.String(length=32)", True), ("amount_cents", "sa.BigInteger()", True),
    ("phone", "sa.String(length=32)", True), ("last_seen_at", "sa.DateTime(timezone=True)", True),
    ("sort_order", "sa.Integer()", True), ("description", "sa.Text()", False),
    ("version", "sa.Integer()", True), ("timezone", "sa.String(length=64)", True),
    ("score", "sa.Numeric(precision=10, scale=2)", True),
    ("public_id", "postgresql.UUID(as_uuid=True)", True), ("country_code",
                                                           "sa.String(length=2)", True),
    ("deleted_at", "sa.DateTime(timezone=True)", True), ("owner_email",
                                                         "sa.String(length=255)", True),
)
# Settings the preamble seeds; data migrations read them.
SETTINGS = (("default_locale", "en-GB"), ("default_currency", "EUR"),
            ("support_email", "support@example.com"))

REVISION_PY = '''"""{message}

Revision ID: {revision}
Revises: {revises}
Create Date: {created}

"""
from alembic import op
import sqlalchemy as sa
{imports}

# revision identifiers, used by Alembic.
revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{upgrade}


def downgrade():
{downgrade}
'''


@dataclass(frozen=True)
class TeamHistory:
    folder: Path
    ordered: tuple[str, ...]  # base first, head last: a topological order
    head: str
    data_migrations: frozenset[str]  # revisions that read rows and use them
    autocommit: frozenset[str]  # revisions with an autocommit_block (not one transaction)
    merges: frozenset[str]
    branched: frozenset[str]  # revisions on a side of a split, between it and its merge
    kinds: Mapping[str, str] = field(default_factory=dict)  # revision -> kind

    def counts(self) -> dict[str, int]:
        """How many revisions of each kind, in the order kinds first appear."""
        found: dict[str, int] = {}
        for revision in self.ordered:
            kind = self.kinds[revision]
            found[kind] = found.get(kind, 0) + 1
        return found


def revision_id(index: int) -> str:
    return hashlib.sha1(f"team-{index}".encode()).hexdigest()[:12]  # noqa: S324 - an id


def write_team_history(
    folder: Path, count: int = DEFAULT_COUNT, *, seed_rows: int = DEFAULT_SEED_ROWS
) -> TeamHistory:
    """Make `folder` a script directory holding `count` team-style revisions.

    `seed_rows` is how many users (and orders, and rows of each seeded table) the seed
    revisions insert: the data migrations read and rewrite them row by row.
    """
    if count < MIN_COUNT:
        raise ValueError(f"a team history needs at least {MIN_COUNT} revisions, not {count}")
    if seed_rows < 1:
        raise ValueError("seed_rows must be at least 1: the data migrations read those rows")
    write_script_directory(folder)
    writer = _Writer(folder / "versions", seed_rows)
    for step in _plan(count):
        writer.write(step)
    ordered = tuple(writer.ordered)
    return TeamHistory(
        folder=folder,
        ordered=ordered,
        head=ordered[-1],
        data_migrations=frozenset(r for r in ordered if writer.kinds[r] == DATA),
        autocommit=frozenset(writer.autocommit),
        merges=frozenset(r for r in ordered if writer.kinds[r] == MERGE),
        branched=frozenset(writer.branched),
        kinds=dict(writer.kinds),
    )


# -- the plan: which kind of revision goes where ---------------------------------------------
PREAMBLE_LENGTH = 5  # users, their seed, orders (with the enum), their seed, app_settings
IDENTIFIER_LIMIT = 63  # PostgreSQL cuts longer names, and op.f() names would no longer match


@dataclass(frozen=True)
class _Step:
    kind: str
    side: str | None = None  # "a" or "b": one side of a split, until its merge
    first_on_side: bool = False


def _plan(count: int) -> list[_Step]:
    """One step per revision: the preamble, then the splits and merges, the enum changes, data
    migrations and concurrent indexes spread evenly; ordinary schema growth everywhere else."""
    steps: list[_Step | None] = [None] * count
    for position in range(PREAMBLE_LENGTH):
        steps[position] = _Step(PREAMBLE)
    merges = max(1, count // REVISIONS_PER_MERGE)
    side_length = 3 if count < 100 else 4
    for number in range(merges):
        # Away from the middle of the history, where the benchmark stands a database.
        fraction = 0.3 if merges == 1 else 0.25 + 0.5 * number / (merges - 1)
        split = int(count * fraction)  # the trunk revision both sides start from
        for offset in range(side_length):
            kind = BRANCH_CYCLE[offset % len(BRANCH_CYCLE)]
            steps[split + 1 + offset] = _Step(kind, "a", offset == 0)
            steps[split + 1 + side_length + offset] = _Step(kind, "b", offset == 0)
        steps[split + 1 + 2 * side_length] = _Step(MERGE)
    free = [position for position, step in enumerate(steps) if step is None]
    for fraction in (0.4, 0.8)[: len(ENUM_ADDED)]:
        wanted = int(count * fraction)
        position = min(free, key=lambda p: abs(p - wanted))
        steps[position] = _Step(ENUM_VALUE)
        free.remove(position)
    data = max(MIN_DATA_MIGRATIONS, round(count * DATA_MIGRATIONS / REFERENCE_COUNT))
    concurrent = max(1, round(count * CONCURRENT_INDEXES / REFERENCE_COUNT))
    for kind, wanted in ((DATA, data), (CONCURRENT_INDEX, concurrent)):
        chosen = {free[int((number + 0.5) * len(free) / wanted)] for number in range(wanted)}
        for position in chosen:
            steps[position] = _Step(kind)
        free = [position for position in free if position not in chosen]
    for turn, position in enumerate(free):
        steps[position] = _Step(ORDINARY_CYCLE[turn % len(ORDINARY_CYCLE)])
    return [step for step in steps if step is not None]


def _table_names() -> Iterator[tuple[str, str]]:
    """The nouns, then numbered again when a very long history has used them all."""
    yield from TABLE_NAMES
    round_number = 2
    while True:
        for name, singular in TABLE_NAMES:
            yield f"{name}{round_number}", f"{singular}{round_number}"
        round_number += 1


# -- the schema the history has built so far -------------------------------------------------
@dataclass
class _Column:
    name: str
    type_: str
    indexable: bool
    indexed: bool = False


@dataclass
class _Table:
    name: str
    singular: str
    label: str  # a NOT NULL text column data migrations read
    columns: dict[str, _Column] = field(default_factory=dict)
    seeded: bool = False
    side: str | None = None  # created on a side of a split: touched only there until merged
    pool_start: int = 0  # where in COLUMN_POOL its added columns start

    def add(self, name: str, type_: str, *, indexable: bool = True,
            indexed: bool = False) -> _Column:
        column = _Column(name, type_, indexable, indexed)
        self.columns[name] = column
        return column

    def free_name(self, wanted: str) -> str:
        name, number = wanted, 2
        while name in self.columns:
            name, number = f"{wanted}_{number}", number + 1
        return name

    def unindexed(self) -> list[_Column]:
        # Foreign-key columns first: they are the ones teams later find unindexed.
        found = [c for c in self.columns.values() if c.indexable and not c.indexed]
        return sorted(found, key=lambda c: not c.name.endswith("_id"))


@dataclass
class _Revision:
    kind: str
    message: str
    upgrade: list[str]
    downgrade: list[str]
    autocommit: bool = False
    postgresql: bool = False  # the file imports sqlalchemy.dialects.postgresql


def _name(text: str) -> str:
    if len(text) > IDENTIFIER_LIMIT:
        raise ValueError(f"{text} is longer than PostgreSQL's {IDENTIFIER_LIMIT} characters")
    return text


def _indent(lines: list[str]) -> str:
    return "\n".join(f"    {line}" if line else "" for line in lines)


class _Writer:
    """Turns the plan into files, keeping a model of the schema so each revision is valid."""

    def __init__(self, versions: Path, seed_rows: int) -> None:
        self.versions = versions
        self.seed_rows = seed_rows
        self.ordered: list[str] = []
        self.kinds: dict[str, str] = {}
        self.autocommit: set[str] = set()
        self.branched: set[str] = set()
        self.tables: dict[str, _Table] = {}
        self.enum_values = list(ENUM_VALUES)
        self.names = _table_names()
        self.turn = 0  # rotates which table the next revision touches
        self.data_turn = 0
        self.preamble_turn = 0
        self.refunds_done = False
        self.trunk_parent: str | None = None
        self.side_parent: str | None = None
        self.side_heads: list[str] = []

    def write(self, step: _Step) -> None:
        index = len(self.ordered) + 1
        revision = revision_id(index)
        down: str | tuple[str, ...] | None
        if step.kind == MERGE:
            if self.side_parent is None or len(self.side_heads) != 1:
                raise ValueError("a merge needs both sides of its split")
            down = (self.side_heads[0], self.side_parent)
            self.side_heads = []
            for table in self.tables.values():
                table.side = None
        elif step.side is not None:
            if step.first_on_side:
                if step.side != "a" and self.side_parent is not None:
                    self.side_heads.append(self.side_parent)
                self.side_parent = self.trunk_parent  # both sides start at the split point
            down = self.side_parent
        else:
            down = self.trunk_parent
        content = self._content(step, revision)
        if step.side is not None:
            self.side_parent = revision
            self.branched.add(revision)
        else:
            self.trunk_parent = revision
        self.ordered.append(revision)
        self.kinds[revision] = content.kind
        if content.autocommit:
            self.autocommit.add(revision)
        created = FIRST_DATE + timedelta(days=DAYS_BETWEEN * index)
        revises = ", ".join(down) if isinstance(down, tuple) else (down or "")
        imports = "from sqlalchemy.dialects import postgresql\n" if content.postgresql else ""
        slug = re.sub(r"[^a-z0-9]+", "_", content.message.lower()).strip("_")[:40]
        (self.versions / f"{revision}_{slug}.py").write_text(REVISION_PY.format(
            message=content.message, revision=revision, revises=revises,
            created=created.strftime("%Y-%m-%d %H:%M:%S.000000"), imports=imports, down=down,
            upgrade=_indent(content.upgrade), downgrade=_indent(content.downgrade),
        ))

    def _content(self, step: _Step, revision: str) -> _Revision:
        if step.kind == PREAMBLE:
            self.preamble_turn += 1
            return PREAMBLES[self.preamble_turn - 1](self)
        if step.kind == MERGE:
            return _Revision(MERGE, "merge heads", ["pass"], ["pass"])
        if step.kind == ENUM_VALUE:
            return self._enum_value()
        if step.kind == DATA:
            return self._data_migration(revision)
        if step.kind == CONCURRENT_INDEX:
            return self._concurrent_index()
        builders = {CREATE_TABLE: self._create_table, ADD_COLUMN: self._add_column,
                    ADD_INDEX: self._add_index, SEED: self._seed,
                    ADD_FOREIGN_KEY: self._add_foreign_key}
        return builders[step.kind](step.side)

    # -- choosing what to touch ----------------------------------------------------------
    def _in_scope(self, side: str | None) -> list[_Table]:
        """Tables a revision may change: on a side of a split only that side's own (the two
        sides run in either order), on the trunk every table."""
        tables = [t for t in self.tables.values() if t.side == side]
        if not tables:
            raise ValueError("no table to change: a side of a split must start with a table")
        self.turn += 1
        start = self.turn % len(tables)
        return tables[start:] + tables[:start]

    # -- the preamble: what every later revision builds on ---------------------------------
    def _create_users(self) -> _Revision:
        users = _Table("users", "user", "name")
        users.add("email", "sa.String(length=255)", indexed=True)  # the unique constraint's
        users.add("name", "sa.String(length=120)")
        self.tables["users"] = users
        return _Revision(PREAMBLE, "create users", [
            "op.create_table('users',",
            "    sa.Column('id', sa.Integer(), nullable=False),",
            "    sa.Column('email', sa.String(length=255), nullable=False),",
            "    sa.Column('name', sa.String(length=120), nullable=False),",
            "    sa.Column('created_at', sa.DateTime(timezone=True), "
            "server_default=sa.text('now()'), nullable=False),",
            "    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),",
            "    sa.UniqueConstraint('email', name=op.f('uq_users_email'))",
            ")",
        ], ["op.drop_table('users')"])

    def _seed_users(self) -> _Revision:
        self.tables["users"].seeded = True
        return _Revision(PREAMBLE, "seed users", [
            "users = sa.table('users', sa.column('email', sa.String), "
            "sa.column('name', sa.String))",
            "op.bulk_insert(users, [",
            "    {'email': f'user{n}@example.com', 'name': f'User {n}'}",
            f"    for n in range(1, {self.seed_rows + 1})",
            "])",
        ], ["op.execute(\"DELETE FROM users WHERE email LIKE 'user%@example.com'\")"])

    def _create_orders(self) -> _Revision:
        orders = _Table("orders", "order", "reference")
        orders.add("user_id", "sa.Integer()", indexed=True)
        orders.add("reference", "sa.String(length=32)")
        self.tables["orders"] = orders
        values = ", ".join(repr(v) for v in ENUM_VALUES)
        return _Revision(PREAMBLE, "create orders", [
            "op.create_table('orders',",
            "    sa.Column('id', sa.Integer(), nullable=False),",
            "    sa.Column('user_id', sa.Integer(), nullable=False),",
            "    sa.Column('reference', sa.String(length=32), nullable=False),",
            f"    sa.Column('status', sa.Enum({values}, name={ENUM_NAME!r}), "
            "server_default='pending', nullable=False),",
            "    sa.Column('total_cents', sa.BigInteger(), server_default='0', nullable=False),",
            "    sa.Column('created_at', sa.DateTime(timezone=True), "
            "server_default=sa.text('now()'), nullable=False),",
            "    sa.ForeignKeyConstraint(['user_id'], ['users.id']),",
            "    sa.PrimaryKeyConstraint('id', name=op.f('pk_orders'))",
            ")",
            "op.create_index(op.f('ix_orders_user_id'), 'orders', ['user_id'], unique=False)",
        ], [
            "op.drop_index(op.f('ix_orders_user_id'), table_name='orders')",
            "op.drop_table('orders')",
            # drop_table leaves the type the table's create made behind
            f"op.execute('DROP TYPE {ENUM_NAME}')",
        ])

    def _seed_orders(self) -> _Revision:
        self.tables["orders"].seeded = True
        # Every third user's order is paid, so the refund data migration finds one.
        sql = ("INSERT INTO orders (user_id, reference, status, total_cents) "
               "SELECT id, 'ORD-' || lpad(id::text, 6, '0'), "
               f"(CASE id % 3 WHEN 1 THEN 'paid' WHEN 2 THEN 'pending' ELSE 'shipped' END)"
               f"::{ENUM_NAME}, id * 1250 FROM users ORDER BY id")
        return _Revision(PREAMBLE, "seed one order per user", [f"op.execute({sql!r})"],
                         ["op.execute(\"DELETE FROM orders WHERE reference LIKE 'ORD-%'\")"])

    def _create_settings(self) -> _Revision:
        rows = ", ".join(f"{{'key': {k!r}, 'value': {v!r}}}" for k, v in SETTINGS)
        return _Revision(PREAMBLE, "create app settings", [
            "app_settings = op.create_table('app_settings',",
            "    sa.Column('key', sa.String(length=64), nullable=False),",
            "    sa.Column('value', sa.Text(), nullable=False),",
            "    sa.PrimaryKeyConstraint('key', name=op.f('pk_app_settings'))",
            ")",
            f"op.bulk_insert(app_settings, [{rows}])",
        ], ["op.drop_table('app_settings')"])

    # -- ordinary schema growth -----------------------------------------------------------
    def _create_table(self, side: str | None) -> _Revision:
        name, singular = next(self.names)
        number = len(self.tables)
        # Every other table refers to an earlier trunk table (a side cannot see the other's).
        trunk = [t for t in self.tables.values() if t.side is None]
        ref = trunk[number % len(trunk)] if number % 2 == 0 else None
        # Autogenerate spells constraint names with op.f(); hand-written ones often leave
        # them None for the naming convention to fill in. The database gets the same names.
        spelled = number % 3 != 0
        table = _Table(name, singular, "name", side=side, pool_start=5 * number)
        identity = ", sa.Identity(always=False)" if number % 4 == 3 else ""
        lines = [
            "# ### commands auto generated by Alembic - please adjust! ###",
            f"op.create_table({name!r},",
            f"    sa.Column('id', sa.Integer(){identity}, nullable=False),",
            "    sa.Column('name', sa.String(length=120), nullable=False),",
        ]
        table.add("name", "sa.String(length=120)", indexed=ref is None)
        indexed = "name"
        if ref is not None:
            column = f"{ref.singular}_id"
            table.add(column, "sa.Integer()", indexed=True)
            indexed = column
            lines.append(f"    sa.Column({column!r}, sa.Integer(), nullable=True),")
        lines.append("    sa.Column('created_at', sa.DateTime(timezone=True), "
                     "server_default=sa.text('now()'), nullable=False),")
        if ref is not None:
            fk = _name(f"fk_{name}_{ref.singular}_id_{ref.name}")
            named = f", name=op.f({fk!r})" if spelled else ""
            lines.append(f"    sa.ForeignKeyConstraint([{ref.singular + '_id'!r}], "
                         f"[{ref.name + '.id'!r}]{named}),")
        pk = f", name=op.f({_name('pk_' + name)!r})" if spelled else ""
        index = _name(f"ix_{name}_{indexed}")
        lines += [
            f"    sa.PrimaryKeyConstraint('id'{pk})",
            ")",
            f"op.create_index(op.f({index!r}), {name!r}, [{indexed!r}], unique=False)",
            "# ### end Alembic commands ###",
        ]
        self.tables[name] = table
        return _Revision(CREATE_TABLE, f"create {name}", lines, [
            f"op.drop_index(op.f({index!r}), table_name={name!r})",
            f"op.drop_table({name!r})",
        ])

    def _new_column(self, side: str | None) -> tuple[_Table, _Column]:
        for table in self._in_scope(side):
            # Each table takes the pool from its own place, so tables grow different columns.
            start = table.pool_start % len(COLUMN_POOL)
            for name, type_, indexable in COLUMN_POOL[start:] + COLUMN_POOL[:start]:
                if name not in table.columns:
                    return table, table.add(name, type_, indexable=indexable)
        raise ValueError("every table has every column of the pool: make COLUMN_POOL longer")

    def _add_column(self, side: str | None) -> _Revision:
        return self._column_revision(*self._new_column(side))

    def _column_revision(self, table: _Table, column: _Column) -> _Revision:
        definition = f"sa.Column({column.name!r}, {column.type_}, nullable=True)"
        postgresql = column.type_.startswith("postgresql.")
        message = f"add {column.name} to {table.name}"
        if self.turn % 2:
            # Flask-Migrate renders every change in a batch block (a no-op on PostgreSQL).
            opening = f"with op.batch_alter_table({table.name!r}, schema=None) as batch_op:"
            return _Revision(ADD_COLUMN, message,
                             [opening, f"    batch_op.add_column({definition})"],
                             [opening, f"    batch_op.drop_column({column.name!r})"],
                             postgresql=postgresql)
        return _Revision(ADD_COLUMN, message, [f"op.add_column({table.name!r}, {definition})"],
                         [f"op.drop_column({table.name!r}, {column.name!r})"],
                         postgresql=postgresql)

    def _unindexed(self, side: str | None) -> tuple[_Table, _Column, _Revision | None]:
        """A column to index, and the revision adding it first when every column has one."""
        for table in self._in_scope(side):
            candidates = table.unindexed()
            if candidates:
                return table, candidates[0], None
        table, column = self._new_column(side)
        return table, column, self._column_revision(table, column)

    def _add_index(self, side: str | None) -> _Revision:
        table, column, added = self._unindexed(side)
        column.indexed = True
        index = _name(f"ix_{table.name}_{column.name}")
        up = [f"op.create_index(op.f({index!r}), {table.name!r}, [{column.name!r}], "
              "unique=False)"]
        down = [f"op.drop_index(op.f({index!r}), table_name={table.name!r})"]
        if added is not None:
            return _Revision(ADD_INDEX, f"{added.message}, indexed", added.upgrade + up,
                             down + added.downgrade, postgresql=added.postgresql)
        return _Revision(ADD_INDEX, f"index {table.name}.{column.name}", up, down)

    def _seed(self, side: str | None) -> _Revision:
        tables = [t for t in self._in_scope(side) if not t.seeded]
        if not tables:
            return self._add_column(side)
        table = tables[0]
        table.seeded = True
        variable = f"{table.name}_table"
        return _Revision(SEED, f"seed {table.name}", [
            f"{variable} = sa.table({table.name!r}, sa.column('name', sa.String))",
            f"op.bulk_insert({variable}, [",
            f"    {{'name': f'{table.name} {{n}}'}} for n in range(1, {self.seed_rows + 1})",
            "])",
        ], [f"op.execute(\"DELETE FROM {table.name} WHERE name LIKE '{table.name} %'\")"])

    def _add_foreign_key(self, side: str | None) -> _Revision:
        created = list(self.tables.values())
        for source in self._in_scope(side):
            # A newer table points at an older one, as a service grows.
            for ref in created[: created.index(source)]:
                column = f"{ref.singular}_id"
                if ref.side not in (None, side) or column in source.columns:
                    continue
                source.add(column, "sa.Integer()")
                fk = _name(f"fk_{source.name}_{column}_{ref.name}")
                # Autogenerate writes None here, naming it by the convention; the downgrade
                # needs the name spelled out (autogenerate's `drop_constraint(None)` fails).
                name = "None" if self.turn % 2 else f"op.f({fk!r})"
                return _Revision(ADD_FOREIGN_KEY, f"link {source.name} to {ref.name}", [
                    f"op.add_column({source.name!r}, sa.Column({column!r}, sa.Integer(), "
                    "nullable=True))",
                    f"op.create_foreign_key({name}, {source.name!r}, {ref.name!r}, "
                    f"[{column!r}], ['id'])",
                ], [
                    f"op.drop_constraint(op.f({fk!r}), {source.name!r}, type_='foreignkey')",
                    f"op.drop_column({source.name!r}, {column!r})",
                ])
        return self._add_column(side)

    # -- what runs outside the migration's transaction ------------------------------------
    def _concurrent_index(self) -> _Revision:
        table, column, added = self._unindexed(None)
        column.indexed = True
        index = _name(f"ix_{table.name}_{column.name}")
        up = [
            "# CREATE INDEX CONCURRENTLY cannot run inside a transaction block.",
            "with op.get_context().autocommit_block():",
            f"    op.create_index(op.f({index!r}), {table.name!r}, [{column.name!r}], "
            "unique=False, postgresql_concurrently=True)",
        ]
        down = [
            "with op.get_context().autocommit_block():",
            f"    op.drop_index(op.f({index!r}), table_name={table.name!r}, "
            "postgresql_concurrently=True)",
        ]
        message = f"index {table.name}.{column.name} concurrently"
        if added is not None:
            return _Revision(CONCURRENT_INDEX, f"{added.message}, {message}",
                             added.upgrade + up, down + added.downgrade, autocommit=True,
                             postgresql=added.postgresql)
        return _Revision(CONCURRENT_INDEX, message, up, down, autocommit=True)

    def _enum_value(self) -> _Revision:
        value = ENUM_ADDED[len(self.enum_values) - len(ENUM_VALUES)]
        before = ", ".join(f"'{v}'" for v in self.enum_values)
        self.enum_values.append(value)
        return _Revision(ENUM_VALUE, f"order status {value}", [
            "# A value added by ALTER TYPE cannot be used until it is committed.",
            "with op.get_context().autocommit_block():",
            f"    op.execute(\"ALTER TYPE {ENUM_NAME} ADD VALUE IF NOT EXISTS '{value}'\")",
        ], [
            # PostgreSQL cannot drop an enum value: recreate the type without it.
            f"op.execute(\"UPDATE orders SET status = 'pending' WHERE status = '{value}'\")",
            "op.execute('ALTER TABLE orders ALTER COLUMN status DROP DEFAULT')",
            f"op.execute('ALTER TYPE {ENUM_NAME} RENAME TO {ENUM_NAME}_old')",
            f"op.execute(\"CREATE TYPE {ENUM_NAME} AS ENUM ({before})\")",
            f"op.execute('ALTER TABLE orders ALTER COLUMN status TYPE {ENUM_NAME} "
            f"USING status::text::{ENUM_NAME}')",
            "op.execute(\"ALTER TABLE orders ALTER COLUMN status SET DEFAULT 'pending'\")",
            f"op.execute('DROP TYPE {ENUM_NAME}_old')",
        ], autocommit=True)

    # -- data migrations: they read rows and use them -------------------------------------
    def _data_migration(self, revision: str) -> _Revision:
        if ENUM_ADDED[0] in self.enum_values and not self.refunds_done:
            self.refunds_done = True
            return self._refund_one_order()
        seeded = [t for t in self.tables.values() if t.seeded and t.side is None]
        table = seeded[self.data_turn % len(seeded)]
        variant = (self._backfill, self._count_into_settings, self._default_from_settings)[
            self.data_turn % 3]
        self.data_turn += 1
        return variant(table, revision)

    def _backfill(self, table: _Table, revision: str) -> _Revision:
        del revision
        label = table.label
        transforms = (
            ("slug", "sa.String(length=140)", "sa.String",
             f"row.{label}.lower().replace(' ', '-')"),
            ("length", "sa.Integer()", "sa.Integer", f"len(row.{label})"),
            ("key", "sa.String(length=140)", "sa.String", f"row.{label}.upper()"),
        )
        suffix, type_, light, expression = transforms[(self.data_turn - 1) // 3 % 3]
        column = table.free_name(f"{label}_{suffix}")
        table.add(column, type_)
        variable = f"{table.name}_table"
        return _Revision(DATA, f"backfill {table.name}.{column}", [
            f"op.add_column({table.name!r}, sa.Column({column!r}, {type_}, nullable=True))",
            "conn = op.get_bind()",
            f"{variable} = sa.table({table.name!r}, sa.column('id', sa.Integer), "
            f"sa.column({label!r}, sa.String), sa.column({column!r}, {light}))",
            "found = 0",
            f"for row in conn.execute(sa.select({variable})):",
            f"    conn.execute({variable}.update().where({variable}.c.id == row.id)"
            f".values({column}={expression}))",
            "    found += 1",
            "if not found:",
            f"    raise RuntimeError({table.name + ' has no rows to backfill'!r})",
        ], [f"op.drop_column({table.name!r}, {column!r})"])

    def _count_into_settings(self, table: _Table, revision: str) -> _Revision:
        key = f"{table.name}.rows_at_{revision}"
        count = f"SELECT count(*) AS total, max(id) AS last_id FROM {table.name}"
        insert = "INSERT INTO app_settings (key, value) VALUES (:key, :value)"
        return _Revision(DATA, f"record how many {table.name} there are", [
            "conn = op.get_bind()",
            f"row = conn.execute(sa.text({count!r})).fetchone()",
            "if row is None or not row.total:",
            f"    raise RuntimeError({table.name + ' has no rows to count'!r})",
            "conn.execute(",
            f"    sa.text({insert!r}),",
            f"    {{'key': {key!r}, 'value': f'{{row.total}} rows, last id {{row.last_id}}'}},",
            ")",
        ], [f"op.execute(\"DELETE FROM app_settings WHERE key = '{key}'\")"])

    def _default_from_settings(self, table: _Table, revision: str) -> _Revision:
        del revision
        setting, wanted = (("default_locale", "locale"), ("default_currency", "currency"))[
            (self.data_turn - 1) // 3 % 2]
        column = table.free_name(wanted)
        table.add(column, "sa.String(length=16)")
        read = f"SELECT value FROM app_settings WHERE key = '{setting}'"
        update = f"UPDATE {table.name} SET {column} = :value WHERE {column} IS NULL"
        return _Revision(DATA, f"default {table.name}.{column} from {setting}", [
            f"op.add_column({table.name!r}, sa.Column({column!r}, sa.String(length=16), "
            "nullable=True))",
            "conn = op.get_bind()",
            f"row = conn.execute(sa.text({read!r})).fetchone()",
            "if row is None:",
            f"    raise RuntimeError({'app_settings has no ' + setting!r})",
            f"conn.execute(sa.text({update!r}), {{'value': row.value}})",
        ], [f"op.drop_column({table.name!r}, {column!r})"])

    def _refund_one_order(self) -> _Revision:
        read = "SELECT id, reference FROM orders WHERE status = 'paid' ORDER BY id LIMIT 1"
        update = f"UPDATE orders SET status = '{ENUM_ADDED[0]}' WHERE id = :id"
        return _Revision(DATA, "refund the first paid order", [
            "conn = op.get_bind()",
            f"row = conn.execute(sa.text({read!r})).fetchone()",
            "if row is None:",
            "    raise RuntimeError('no paid order to refund')",
            f"conn.execute(sa.text({update!r}), {{'id': row.id}})",
        ], [f"op.execute(\"UPDATE orders SET status = 'paid' WHERE status = '{ENUM_ADDED[0]}'\")"])


PREAMBLES = (_Writer._create_users, _Writer._seed_users, _Writer._create_orders,
             _Writer._seed_orders, _Writer._create_settings)
