"""The bootstrapping database: its schema, its version, and how it is opened.

One module owns the schema (SQLAlchemy 2 ORM). A database is a SQLite file
(the default: zero set-up) or a PostgreSQL server (``postgresql://...``, driven
through psycopg 3). The schema version is stored in the ``meta`` table and is
checked on every open: a database written by a newer keras_fgvc is refused
with a message naming both versions; an older one is migrated in place, in
one transaction (`MIGRATIONS`; version 1 -> 2 adds the recall probes' columns
to ``score``, left NULL for the rounds scored before).

Tables (see `keras_fgvc/bootstrap/store.py` for what each row means):
``meta``, ``category``, ``image``, ``member``, ``round``, ``score``,
``scored_shard``, ``task``, ``assignment``, ``decision``.
"""

import os

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

SCHEMA_VERSION = 2

KINDS = ("positive", "hard_negative", "background")
ORIGINS = ("seed", "pool")
ROUND_STATUSES = ("training", "scoring", "labelling", "closed")
DECISIONS = ("accept", "reject", "unsure")


class SchemaVersionError(RuntimeError):
    """The database's schema version is not the one this code reads and writes."""


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Category(Base):
    __tablename__ = "category"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(Integer, unique=True)  # 0..N-1, sorted names
    name: Mapped[str] = mapped_column(String(200), unique=True)
    definition: Mapped[str] = mapped_column(Text, default="")


class Image(Base):
    __tablename__ = "image"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)  # absolute
    origin: Mapped[str] = mapped_column(String(8))  # 'seed' | 'pool'
    subset: Mapped[int | None] = mapped_column(Integer, nullable=True)  # pool subset 1..k
    truth: Mapped[str | None] = mapped_column(String(200), nullable=True)  # name | 'none'
    __table_args__ = (Index("ix_image_origin_subset", "origin", "subset"),)


class Member(Base):
    """S_i (positives), H_i (hard negatives) and the seed background, by round."""

    __tablename__ = "member"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id"))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("category.id"), nullable=True)
    # category_id or 0: NULLs are distinct in UNIQUE constraints on both backends.
    category_key: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer)
    __table_args__ = (
        UniqueConstraint("image_id", "category_key", "kind", name="uq_member"),
        Index("ix_member_kind_round", "kind", "round"),
    )


class Round(Base):
    __tablename__ = "round"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index: Mapped[int] = mapped_column(Integer, unique=True)  # 1..k
    status: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    model_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    workdir: Mapped[str | None] = mapped_column(Text, nullable=True)
    lineage: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    closed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Score(Base):
    __tablename__ = "score"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id"))  # argmax
    score: Mapped[float] = mapped_column(Float)  # top confidence
    shard: Mapped[int] = mapped_column(Integer)
    # The recall probe (`selection.probe_distribution`): the category a uniform-sample
    # task asks about, the chance q it was drawn with, and the model's confidence in it.
    # NULL for rounds scored by schema version 1 (their uniform tasks ask the argmax).
    probe_category_id: Mapped[int | None] = mapped_column(ForeignKey("category.id"),
                                                          nullable=True)
    probe_q: Mapped[float | None] = mapped_column(Float, nullable=True)
    probe_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    __table_args__ = (
        UniqueConstraint("round", "image_id", name="uq_score"),
        Index("ix_score_round_shard", "round", "shard"),
    )


class ScoredShard(Base):
    __tablename__ = "scored_shard"
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)


class Task(Base):
    """One review question: is image `image_id` a `category_id`?

    `taken` counts the live leases and decisions (assignment rows); `open` is
    ``taken < overlap`` and drives the queue index; `outcome` is the majority
    decision once `overlap` labelers decided (NULL while pending).
    """

    __tablename__ = "task"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    round: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("category.id"))
    score: Mapped[float] = mapped_column(Float)
    selected: Mapped[bool] = mapped_column(Boolean)
    uniform: Mapped[bool] = mapped_column(Boolean)
    gold: Mapped[bool] = mapped_column(Boolean)
    order_key: Mapped[float] = mapped_column(Float)
    neighbors: Mapped[list | None] = mapped_column(JSON, nullable=True)
    taken: Mapped[int] = mapped_column(Integer, default=0)
    open: Mapped[bool] = mapped_column(Boolean, default=True)
    outcome: Mapped[str | None] = mapped_column(String(8), nullable=True)
    __table_args__ = (
        UniqueConstraint("round", "image_id", name="uq_task"),
        Index("ix_task_queue", "round", "open", "order_key"),
        Index("ix_task_category_queue", "round", "category_id", "open", "order_key"),
        Index("ix_task_outcome", "round", "category_id", "outcome"),
    )


class Assignment(Base):
    """A lease of one slot of a task to a labeler; it lapses after lease_seconds unless decided."""

    __tablename__ = "assignment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    slot: Mapped[int] = mapped_column(Integer)
    labeler: Mapped[str] = mapped_column(String(200))
    assigned_at: Mapped[float] = mapped_column(Float)
    decided: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (
        UniqueConstraint("task_id", "slot", name="uq_assignment_slot"),
        UniqueConstraint("task_id", "labeler", name="uq_assignment_labeler"),
        Index("ix_assignment_lapse", "decided", "assigned_at"),
        Index("ix_assignment_labeler", "labeler", "decided"),
    )


class Decision(Base):
    __tablename__ = "decision"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("task.id"))
    labeler: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(8))
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    __table_args__ = (UniqueConstraint("task_id", "labeler", name="uq_decision"),)


def database_url(db):
    """The SQLAlchemy URL for `db`: a SQLite file path, ``sqlite:///...`` or ``postgresql://...``."""
    if not isinstance(db, (str, os.PathLike)) or not str(db):
        raise ValueError(f"db must be a SQLite file path or a database URL, got {db!r}")
    db = os.fspath(db)
    if "://" not in db:
        return make_url("sqlite:///" + os.path.abspath(db))
    url = make_url(db)
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        if not url.database or url.database == ":memory:":
            raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
        return url.set(drivername="sqlite+pysqlite")
    raise ValueError(f"unsupported database URL {db!r}: use a SQLite file path, "
                     "sqlite:///FILE or postgresql://USER@HOST/NAME")


def _configure_sqlite(engine):
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # transactions are begun below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a process kill
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-32768")  # 32 MiB of pages per connection
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        # Writers take the lock up front (BEGIN IMMEDIATE), so a read-then-write
        # transaction never fails to upgrade its lock; readers stay deferred.
        # Straight to the driver: exec_driver_sql costs ten times the BEGIN itself.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.connection.driver_connection.execute(f"BEGIN {mode}")


def make_engine(db, create=False):
    """An Engine for `db`; a SQLite file must exist unless `create`."""
    url = database_url(db)
    if url.get_backend_name() == "sqlite":
        path = url.database
        if not create and not os.path.isfile(path):
            raise FileNotFoundError(f"no bootstrapping database at {path}; create it with "
                                    "`python -m keras_fgvc.bootstrap init`")
        if create and not os.path.isdir(os.path.dirname(path)):
            raise FileNotFoundError(f"the folder of {path} does not exist")
        engine = create_engine(url, pool_size=8, max_overflow=24, pool_timeout=60,
                               connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=8, max_overflow=24, pool_timeout=60,
                         pool_pre_ping=True)


def check_schema(engine, create=False):
    """Check (or, with `create`, write) the schema; returns the schema version.

    Raises SchemaVersionError for a database of another version, or one that
    is not a bootstrapping database and `create` is false.
    """
    where = engine.url.render_as_string(hide_password=True)
    if "meta" not in inspect(engine).get_table_names():
        if not create:
            raise SchemaVersionError(f"{where} is not a keras_fgvc bootstrapping database "
                                     "(no meta table); create it with `init`")
        Base.metadata.create_all(engine)
        with Session(engine) as session, session.begin():
            if session.get(Meta, "schema_version") is None:
                session.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
        return SCHEMA_VERSION
    with Session(engine) as session:
        row = session.scalar(select(Meta.value).where(Meta.key == "schema_version"))
    if row is None or not row.strip().isdigit():
        raise SchemaVersionError(f"{where} has no valid schema_version in its meta table")
    version = int(row)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has schema version {version}, newer than this keras_fgvc's "
            f"{SCHEMA_VERSION}; upgrade keras_fgvc to open it")
    if version < SCHEMA_VERSION:
        missing = [v for v in range(version, SCHEMA_VERSION) if v not in MIGRATIONS]
        if missing:
            raise SchemaVersionError(
                f"{where} has schema version {version}, older than this keras_fgvc's "
                f"{SCHEMA_VERSION}, and no migration from {missing[0]} exists; re-run "
                "`init` into a new database")
        migrate(engine, version)
        version = SCHEMA_VERSION
    if create:
        Base.metadata.create_all(engine)  # checkfirst: only adds missing tables
    return version


# version -> the statements that take a database of that version to the next one.
MIGRATIONS = {
    1: ("ALTER TABLE score ADD COLUMN probe_category_id INTEGER REFERENCES category (id)",
        "ALTER TABLE score ADD COLUMN probe_q FLOAT",
        "ALTER TABLE score ADD COLUMN probe_score FLOAT"),
}


def migrate(engine, version):
    """Bring a database of schema `version` up to `SCHEMA_VERSION`, in one transaction.

    Concurrent openers are safe: the version row is re-read under a write lock
    first (SQLite: BEGIN IMMEDIATE; PostgreSQL: FOR UPDATE), so a migration
    runs once.
    """
    with engine.connect().execution_options(sqlite_begin="IMMEDIATE") as connection, \
            connection.begin():
        query = select(Meta.value).where(Meta.key == "schema_version")
        if backend(engine) == "postgresql":
            query = query.with_for_update()
        current = int(connection.scalar(query))
        for step in range(current, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                connection.exec_driver_sql(statement)
        connection.execute(Meta.__table__.update().where(Meta.key == "schema_version")
                           .values(value=str(SCHEMA_VERSION)))
    return SCHEMA_VERSION


def backend(engine: Engine):
    """'sqlite' or 'postgresql'."""
    return engine.url.get_backend_name()
