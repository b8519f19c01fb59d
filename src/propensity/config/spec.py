"""The project spec, ``propensity.yaml``, as typed models.

One file says everything about a project: the entity scored, where its events come from and how to read them,
and (as later stages land) its features, actions, models, destinations and policies. Loading validates all of it
and reports every mistake with its key path, e.g. ``features[3].window: '30 days' is not a duration; use forms
like 30d, 12h, 90m``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from propensity.config.actions import Action, check_actions
from propensity.config.base import StrictModel
from propensity.config.calendar import zone_of
from propensity.config.decisions import PolicySettings, SegmentSettings, TargetSettings
from propensity.config.destinations import DestinationSpec, GateSettings
from propensity.config.durations import Duration, FiniteDuration
from propensity.config.engine import Engine, SparkSettings, StorageSettings
from propensity.config.errors import SpecError, from_validation_error
from propensity.config.experiments import ExperimentSettings
from propensity.config.features import FeatureDefinition, check_feature_set
from propensity.config.monitoring import AlertSettings, MonitoringSettings
from propensity.config.retraining import RetrainSettings
from propensity.config.scoring import ScoringSettings
from propensity.config.serving import ServingSettings
from propensity.config.tables import TableSpec
from propensity.config.training import TrainingSettings
from propensity.config.warehouse import SqlQuery
from propensity.core.clock import Clock
from propensity.core.event import CORE_FIELDS, PROPERTY_FIELDS, STANDARD_EVENT_TYPES

SPEC_FILENAME = "propensity.yaml"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Canonical fields a source may map from its own column names; event_id is optional (derived when absent).
MAPPABLE_FIELDS: tuple[str, ...] = (*CORE_FIELDS, *PROPERTY_FIELDS)


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone; use an IANA name such as UTC, Europe/Paris, America/New_York"
        ) from None
    return value


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid {what} name; use lowercase letters, digits and underscores, "
            "starting with a letter"
        )
    return value


class Entity(StrictModel):
    """Who is scored. Every event and attribute row carries this entity's id as ``customer_id``."""

    name: str = Field(
        default="customer",
        description="What a customer is called in this project (household, account, ...); ids are still `customer_id`.",
    )


class EventRules(StrictModel):
    """What a valid event is. Rows breaking these rules are quarantined with the reason, never dropped."""

    types: list[str] = Field(
        default_factory=lambda: list(STANDARD_EVENT_TYPES),
        description="The event types a valid event may have (the standard vocabulary by default); add to it with extra_types.",
    )
    extra_types: list[str] = Field(
        default_factory=list, description="Added to `types` (keeps the standard list)."
    )
    negative_amount_types: list[str] = Field(
        default_factory=lambda: ["refund"],
        description="Event types allowed a negative amount (refunds); other events with one are quarantined.",
    )
    max_future: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("1d"),
        description="Events timestamped more than this after their ingestion are quarantined (clock errors).",
    )

    @field_validator("types", "extra_types")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        return [_check_name(v, "event type") for v in values]

    @property
    def allowed_types(self) -> list[str]:
        return list(dict.fromkeys([*self.types, *self.extra_types]))


class CsvOptions(StrictModel):
    delimiter: str = Field(default=",", description="Field separator.")
    header: bool = Field(
        default=True,
        description="The first row holds column names (false: columns are named column1, column2, ...).",
    )
    quote: str = Field(default='"', description="Quote character.")


class KafkaSource(StrictModel):
    """A Kafka topic of JSON events (one object per message), consumed with a consumer group. Any Kafka-protocol
    cluster works; the servers are read from an environment variable so the file never holds them."""

    bootstrap_servers_env: str = Field(
        default="KAFKA_BOOTSTRAP_SERVERS",
        description="Environment variable holding the bootstrap servers (host:port,host:port).",
    )
    topic: str
    group: str = Field(default="propensity", description="Consumer group; offsets are committed there.")
    format: Literal["json"] = "json"
    start: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new group starts reading (later runs resume at its offsets)."
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka settings (security.protocol, sasl.mechanism, ...); secrets belong in the "
        "environment: a value `env:NAME` is read from $NAME.",
    )


class RedisStreamSource(StrictModel):
    """A Redis stream of JSON events, consumed with a consumer group (XREADGROUP, XACK after the durable
    append)."""

    url_env: str = Field(default="REDIS_URL", description="Environment variable holding the Redis URL.")
    stream: str = Field(description="The stream's key.")
    group: str = Field(
        default="propensity", description="Consumer group (created at the stream's start if new)."
    )
    field: str | None = Field(
        default="event",
        description="The entry field holding the JSON event; null: the entry's fields are the event's fields.",
    )
    format: Literal["json"] = "json"


class EventSource(StrictModel):
    """Where events come from: a file (or glob of files), a Kafka topic or a Redis stream, and how to map its
    fields onto the canonical event."""

    name: str = Field(
        description="The source's name: `propensity ingest --source NAME`, and each event's `source`."
    )
    path: str = Field(default="", description="A file, directory or glob, relative to the spec's folder.")
    kafka: KafkaSource | None = Field(
        default=None, description="Consume a Kafka topic (`propensity stream`)."
    )
    redis_stream: RedisStreamSource | None = Field(
        default=None, description="Consume a Redis stream (`propensity stream`)."
    )
    sql: SqlQuery | None = Field(
        default=None,
        description="Read from PostgreSQL by a query (`propensity ingest`); incremental with a watermark column.",
    )
    format: Literal["auto", "csv", "parquet", "jsonl"] = Field(
        default="auto",
        description="File format; auto: from the extension (.csv, .parquet, .jsonl, each optionally .gz).",
    )
    columns: dict[str, str] = Field(
        default_factory=dict, description="canonical field → the source's column name (identity when absent)."
    )
    event_type: str | None = Field(default=None, description="Constant event type for a one-kind file.")
    event_type_values: dict[str, str] = Field(
        default_factory=dict, description="The source's event type values → canonical event types."
    )
    timestamp_format: str | None = Field(default=None, description="strptime format; ISO 8601 when absent.")
    timezone: str = Field(default="UTC", description="Zone of timestamps that carry no offset.")
    delay: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("0s"),
        description="How long after event_time the platform could have known the event (bulk history).",
    )
    csv: CsvOptions = Field(
        default_factory=CsvOptions, description="How CSV files are read (delimiter, header, quote)."
    )
    dedupe: Literal["event_id", "content", "none"] | None = Field(
        default=None,
        description="Which rows are the same event: event_id (the source's id column; a row without one is "
        "quarantined), content (identical content, whatever the id), none (every row is an event, identical "
        "lines included: line-item files repeat lines legitimately). Default: event_id when the source has an "
        "id column, else content. Re-ingesting a file adds nothing in every mode.",
    )
    schema_drift: Literal["accept", "quarantine"] = Field(
        default="accept",
        description="When a file's columns differ from the source's last-seen ones (new, missing, renamed or "
        "retyped columns; always reported): accept (ingest it and take its columns as the new schema) or "
        "quarantine (every row to the quarantine, reason schema_drift, until `propensity ingest "
        "--accept-schema`).",
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "source")

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        return _check_zone(value)

    @property
    def is_stream(self) -> bool:
        return self.kafka is not None or self.redis_stream is not None

    @model_validator(mode="after")
    def _one_origin(self) -> EventSource:
        given = [
            k
            for k, v in (
                ("path", self.path),
                ("kafka", self.kafka),
                ("redis_stream", self.redis_stream),
                ("sql", self.sql),
            )
            if v
        ]
        if len(given) > 1:
            raise ValueError(f"give one of path, kafka, redis_stream, sql (got {', '.join(given)})")
        return self

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for canonical in value:
            if canonical not in MAPPABLE_FIELDS:
                raise ValueError(
                    f"{canonical!r} is not an event field; map one of: {', '.join(MAPPABLE_FIELDS)} "
                    "(other columns are kept as properties automatically)"
                )
        return value


class AttributeSource(StrictModel):
    """Customer attributes with as-of semantics: each row is valid from ``valid_from`` until superseded."""

    name: str = Field(
        description="The attribute source's name (features refer to its attributes by attribute name)."
    )
    path: str = Field(default="", description="A file, directory or glob, relative to the spec's folder.")
    sql: SqlQuery | None = Field(
        default=None,
        description="Or: the rows of a PostgreSQL query (read whole at each load: attributes are a snapshot).",
    )
    format: Literal["auto", "csv", "parquet", "jsonl"] = Field(
        default="auto", description="File format; auto: from the extension."
    )
    customer_id: str = Field(default="customer_id", description="The source's customer id column.")
    valid_from: str | None = Field(
        default=None, description="The source's valid-from column; absent means valid since the beginning."
    )
    attributes: list[str] | None = Field(default=None, description="Columns to keep; all others when absent.")
    timezone: str = Field(
        default="UTC", description="Zone of valid_from timestamps written without an offset."
    )
    timestamp_format: str | None = Field(
        default=None, description="strptime format of valid_from; ISO 8601 when absent."
    )
    csv: CsvOptions = Field(
        default_factory=CsvOptions, description="How CSV files are read (delimiter, header, quote)."
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "attribute source")

    @model_validator(mode="after")
    def _one_origin(self) -> AttributeSource:
        if bool(self.path) == (self.sql is not None):
            raise ValueError("give one of path or sql")
        return self

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        return _check_zone(value)


class ProjectSpec(StrictModel):
    """The whole of ``propensity.yaml``."""

    project: str = Field(
        default="propensity-project", description="The project's name (shown in reports and monitoring)."
    )
    timezone: str = Field(
        default="UTC",
        description="The project's calendar: times written without an offset (a date-only --as-of, spine "
        "dates, cutoffs) are wall-clock times here, calendar slides (1mo) and event_date follow it.",
    )
    clock: Clock = Field(
        default="live",
        description="What 'now' is for commands that take an as-of (score, monitor, features, serve): `live` "
        "is the wall clock (events keep arriving; a newest event older than the freshness threshold is "
        "reported as stale data); `data` is the event log's newest event (a fixed history: the example "
        "projects, demos, backtests).",
    )
    entity: Entity = Field(default_factory=Entity)
    events: EventRules = Field(default_factory=EventRules)
    sources: list[EventSource] = Field(default_factory=list)
    attributes: list[AttributeSource] = Field(default_factory=list)
    tables: list[TableSpec] = Field(
        default_factory=list,
        description="Labelled tables (one row per example), trained by `propensity train --table NAME`.",
    )
    features: list[FeatureDefinition] = Field(
        default_factory=list,
        description="What each customer looks like as of a time: windowed aggregates, session features, attributes and arithmetic over them (docs/features.md).",
    )
    actions: list[Action] = Field(default_factory=list)
    training: TrainingSettings = Field(
        default_factory=TrainingSettings,
        description="Snapshot cutoffs, the time split, minimums, LightGBM settings and the promotion gate (docs/training.md).",
    )
    serving: ServingSettings = Field(
        default_factory=ServingSettings,
        description="The online store (memory or Redis), score lifetime and canary of `propensity serve` (docs/serving.md).",
    )
    scoring: ScoringSettings = Field(
        default_factory=ScoringSettings,
        description="Where batch scoring runs are stored and how long their scores are valid (docs/scoring.md).",
    )
    segments: SegmentSettings = Field(default_factory=SegmentSettings)
    policies: PolicySettings = Field(default_factory=PolicySettings)
    targets: list[TargetSettings] = Field(
        default_factory=list,
        description="Named targets (an action, a threshold or top share, the economics it was chosen with), "
        "saved from the console's targeting page; a destination with target: <name> publishes only them.",
    )
    gates: GateSettings = Field(default_factory=GateSettings)
    destinations: list[DestinationSpec] = Field(
        default_factory=list,
        description="Where activated scores go: file drops, ad audiences, webhooks, Redis profiles (docs/activation.md).",
    )
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    experiments: ExperimentSettings = Field(
        default_factory=ExperimentSettings,
        description="Holdout (control) groups that are never activated, to measure lift (docs/experiments.md).",
    )
    retraining: RetrainSettings = Field(default_factory=RetrainSettings)
    # What computes offline features, labels, training sets and batch scores: duckdb (one machine) or spark.
    engine: Engine = "duckdb"
    spark: SparkSettings = Field(default_factory=SparkSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)

    # Where the spec was read from; relative source paths resolve against it. Not part of the file.
    root: Path = Field(default=Path("."), exclude=True)

    _zone = field_validator("timezone")(_check_zone)

    @model_validator(mode="before")
    @classmethod
    def _zoned_defaults(cls, data: Any) -> Any:
        # Default times (the spine's align) are read in the project's zone: give them a section to be read in.
        if isinstance(data, dict) and data.get("timezone") not in (None, "UTC"):
            training = data.get("training")
            if training is None or isinstance(training, dict):
                training = dict(training or {})
                if training.get("spine") is None:
                    training["spine"] = {}
                data = {**data, "training": training}
        return data

    @model_validator(mode="after")
    def _cross_checks(self) -> ProjectSpec:
        allowed = set(self.events.allowed_types)
        for i, source in enumerate(self.sources):
            if source.event_type is not None and source.event_type not in allowed:
                raise ValueError(
                    f"sources[{i}].event_type: {source.event_type!r} is not a declared event type; "
                    f"declare it in events.extra_types or use one of: {', '.join(sorted(allowed))}"
                )
            for raw, canonical in source.event_type_values.items():
                if canonical not in allowed:
                    raise ValueError(
                        f"sources[{i}].event_type_values.{raw}: {canonical!r} is not a declared event type; "
                        "declare it in events.extra_types"
                    )
        names = [s.name for s in self.sources] + [a.name for a in self.attributes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sources/attributes: names must be unique; repeated: {', '.join(dupes)}")
        feature_problems = check_feature_set(
            self.features,
            event_types=allowed,
            attribute_sources={a.name: a.attributes for a in self.attributes},
        )
        if feature_problems:
            raise ValidationError.from_exception_data(
                "ProjectSpec",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("value_error", message),
                        loc=("features", *loc),
                        input=None,
                    )
                    for loc, message in feature_problems
                ],
            )
        return self

    @model_validator(mode="after")
    def _check_targets(self) -> ProjectSpec:
        actions = {a.name for a in self.actions}
        names = [t.name for t in self.targets]
        for i, t in enumerate(self.targets):
            if names.count(t.name) > 1:
                raise ValueError(f"targets[{i}].name: {t.name!r} is used twice; target names must be unique")
            if actions and t.action not in actions:
                raise ValueError(
                    f"targets[{i}].action: {t.action!r} is not a declared action; known: {', '.join(sorted(actions))}"
                )
        for i, d in enumerate(self.destinations):
            if d.target is not None and d.target not in names:
                known = ", ".join(names) or "(none saved)"
                raise ValueError(f"destinations[{i}].target: no target named {d.target!r}; known: {known}")
        return self

    @model_validator(mode="after")
    def _check_actions(self) -> ProjectSpec:
        problems = check_actions(self.actions, set(self.events.allowed_types))
        if problems:
            raise ValidationError.from_exception_data(
                "ProjectSpec",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("value_error", message), loc=("actions", *loc), input=None
                    )
                    for loc, message in problems
                ],
            )
        return self

    @property
    def freshness_threshold(self) -> timedelta:
        """How old the newest event may be before data counts as stale: the alert level of the
        ``freshness_silence`` monitor (``alerts.thresholds.freshness_silence``, 24 hours by default), used by
        the staleness warnings, the monitors and the activation gate alike."""
        return timedelta(hours=self.alerts.threshold("freshness_silence", "").alert)

    def action(self, name: str) -> Action:
        for action in self.actions:
            if action.name == name:
                return action
        known = ", ".join(a.name for a in self.actions) or "(none declared)"
        raise SpecError(
            str(self.root / SPEC_FILENAME), [f"actions: no action named {name!r}; known: {known}"]
        )

    def table(self, name: str) -> TableSpec:
        for table in self.tables:
            if table.name == name:
                return table
        known = ", ".join(t.name for t in self.tables) or "(none declared)"
        raise SpecError(str(self.root / SPEC_FILENAME), [f"tables: no table named {name!r}; known: {known}"])

    def source(self, name: str) -> EventSource:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "(none declared)"
        raise SpecError(
            str(self.root / SPEC_FILENAME), [f"sources: no source named {name!r}; known: {known}"]
        )

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.root / p)


def parse_spec(data: Any, *, source: str = SPEC_FILENAME, root: Path | None = None) -> ProjectSpec:
    """Validate an already-parsed mapping; raise :class:`SpecError` naming every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(source, [f"(top level): expected a mapping of sections, got {type(data).__name__}"])
    zone = data.get("timezone")
    try:
        zone_of(zone) if isinstance(zone, str) else None
    except ValueError:
        zone = None  # reported once, at `timezone`
    try:
        # Times without an offset anywhere in the spec are read in the project's zone (config/calendar.py).
        spec = ProjectSpec.model_validate(
            data, context={"timezone": zone if isinstance(zone, str) else "UTC"}
        )
    except ValidationError as exc:
        raise from_validation_error(source, exc) from None
    return spec.model_copy(update={"root": root or Path(".")})


def load_spec(path: str | Path) -> ProjectSpec:
    """Load ``propensity.yaml`` (or the one inside a workspace folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / SPEC_FILENAME
    if not p.exists():
        raise SpecError(str(p), ["file not found; run `propensity init` to create a commented example"])
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise SpecError(str(p), [f"(YAML syntax) at {where}: {getattr(exc, 'problem', exc)}"]) from None
    return parse_spec(data, source=str(p), root=p.parent.resolve())
