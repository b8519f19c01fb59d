"""The canonical event: the one shape every source is mapped into and every later stage reads.

Timestamps are timezone-aware UTC. ``event_time`` is when it happened (from the source); ``available_at`` is when
the platform could first have known it (ingest time for live events; event_time + the source's declared delay
for bulk history, unless the source carries its own availability column). See DESIGN.md, "Time".
"""

from __future__ import annotations

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")

# Identity and time: every event has these, and validation guarantees them.
CORE_FIELDS: tuple[str, ...] = ("event_id", "customer_id", "event_type", "event_time", "available_at")

# Typed properties: optional, typed, and queryable as columns by the feature engine.
NUMERIC_PROPERTIES: tuple[str, ...] = ("amount", "quantity")
TEXT_PROPERTIES: tuple[str, ...] = ("currency", "sku", "category", "campaign_id", "channel", "plan")
PROPERTY_FIELDS: tuple[str, ...] = NUMERIC_PROPERTIES + TEXT_PROPERTIES

# Bookkeeping added by the log: where and when the row came in. ``properties`` keeps every extra source column
# as a JSON object of strings, so nothing a user sends is dropped.
LOG_FIELDS: tuple[str, ...] = ("properties", "source", "ingested_at")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_time", UTC_TS, nullable=False),
        pa.field("available_at", UTC_TS, nullable=False),
        pa.field("amount", pa.float64()),
        pa.field("quantity", pa.float64()),
        pa.field("currency", pa.string()),
        pa.field("sku", pa.string()),
        pa.field("category", pa.string()),
        pa.field("campaign_id", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("plan", pa.string()),
        pa.field("properties", pa.string()),
        pa.field("source", pa.string()),
        pa.field("ingested_at", UTC_TS, nullable=False),
    ]
)

# The DuckDB DDL of the log table, derived from the same field list so the two can never disagree.
EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS events (
    event_id     VARCHAR NOT NULL,
    customer_id  VARCHAR NOT NULL,
    event_type   VARCHAR NOT NULL,
    event_time   TIMESTAMPTZ NOT NULL,
    available_at TIMESTAMPTZ NOT NULL,
    amount       DOUBLE,
    quantity     DOUBLE,
    currency     VARCHAR,
    sku          VARCHAR,
    category     VARCHAR,
    campaign_id  VARCHAR,
    channel      VARCHAR,
    plan         VARCHAR,
    properties   JSON,
    source       VARCHAR,
    ingested_at  TIMESTAMPTZ NOT NULL
)
"""

# The event types propensity knows out of the box. A project may declare more in ``events.types``.
STANDARD_EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "search",
    "cart_add",
    "cart_remove",
    "checkout",
    "purchase",
    "refund",
    "signup",
    "subscription_start",
    "plan_upgrade",
    "plan_downgrade",
    "renewal",
    "cancellation",
    "campaign_sent",
    "campaign_open",
    "campaign_click",
    "coupon_redemption",
    "support_contact",
    # Deliverability feedback from an email service: the inbox is unreachable (hard bounce), or the customer
    # asked not to be mailed (spam complaint, unsubscribe). Engagement data from such inboxes is not a signal.
    "email_bounce",
    "spam_complaint",
    "unsubscribe",
)

# Customer attributes with as-of semantics, in long form: one row per (customer, attribute, version).
# A value holds from ``valid_from`` until the next version of the same attribute; it is visible as of t
# only when ``available_at <= t`` too (a snapshot loaded today cannot inform a training row from last year
# unless the source says it was valid then and the project accepts that, see docs/events.md).
ATTRIBUTES_DDL = """
CREATE TABLE IF NOT EXISTS attributes (
    customer_id  VARCHAR NOT NULL,
    attribute    VARCHAR NOT NULL,
    value        VARCHAR,
    valid_from   TIMESTAMPTZ NOT NULL,
    available_at TIMESTAMPTZ NOT NULL,
    source       VARCHAR,
    ingested_at  TIMESTAMPTZ NOT NULL
)
"""
