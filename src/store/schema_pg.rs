//! The PostgreSQL schema: the same tables, columns, indexes and numbered steps as
//! [`super::schema::MIGRATIONS`], written for PostgreSQL. Step `n` here is step `n` there;
//! the version lives in `lsps1_schema` (PostgreSQL has no `user_version`), and the steps run
//! under a transaction-scoped advisory lock, so that plugins starting together migrate once.
//!
//! Kept as in SQLite, so one store code reads both: integers are `BIGINT` (sat, msat, unix
//! ms), flags are `BIGINT` 0/1 with the same `CHECK`s, text is `TEXT`. Triggers are PL/pgSQL
//! functions doing what the SQLite triggers do.
//!
//! Never edit a released step: add a new one, here and in `schema.rs` together.

/// `pg_advisory_xact_lock` key of the migrations ("lsps1" in ASCII).
pub const MIGRATION_LOCK: i64 = 0x006c_7370_7331;

/// Created before any step: where the version is kept.
pub const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS lsps1_schema (version BIGINT NOT NULL); \
     INSERT INTO lsps1_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM lsps1_schema)";

pub const PG_MIGRATIONS: &[&str] = &[
    // v1
    r#"
    CREATE TABLE orders (
        order_id                        TEXT PRIMARY KEY NOT NULL,
        created_at_ms                   BIGINT NOT NULL,
        updated_at_ms                   BIGINT NOT NULL,
        client_node_id                  TEXT NOT NULL,
        transport                       TEXT NOT NULL CHECK (transport IN ('p2p', 'rest')),
        lsp_balance_sat                 BIGINT NOT NULL CHECK (lsp_balance_sat >= 1),
        client_balance_sat              BIGINT NOT NULL CHECK (client_balance_sat >= 0),
        required_channel_confirmations  BIGINT NOT NULL,
        funding_confirms_within_blocks  BIGINT NOT NULL,
        channel_expiry_blocks           BIGINT NOT NULL,
        token                           TEXT NOT NULL,
        refund_onchain_address          TEXT,
        announce_channel                BIGINT NOT NULL CHECK (announce_channel IN (0, 1)),
        client_info                     TEXT,
        phase                           TEXT NOT NULL
            CHECK (phase IN ('awaiting_payment', 'payment_held', 'opening', 'completed', 'failed')),
        failure_reason                  TEXT,
        paid_method                     TEXT CHECK (paid_method IN ('bolt11', 'bolt12', 'onchain')),
        fee_total_sat                   BIGINT NOT NULL,
        order_total_sat                 BIGINT NOT NULL,
        funding_feerate_perkw           BIGINT NOT NULL,
        reserved_sat                    BIGINT NOT NULL,
        expires_at_ms                   BIGINT NOT NULL
    );
    CREATE INDEX orders_by_peer ON orders (client_node_id, phase);
    CREATE INDEX orders_by_phase ON orders (phase, expires_at_ms);
    CREATE INDEX orders_by_created ON orders (created_at_ms);

    CREATE TABLE payments (
        order_id          TEXT NOT NULL REFERENCES orders (order_id),
        method            TEXT NOT NULL CHECK (method IN ('bolt11', 'bolt12', 'onchain')),
        expires_at_ms     BIGINT NOT NULL,
        fee_total_sat     BIGINT NOT NULL,
        order_total_sat   BIGINT NOT NULL,
        invoice           TEXT,
        payment_hash      TEXT UNIQUE,
        preimage          TEXT,
        payment_secret    TEXT,
        min_final_cltv    BIGINT,
        offer             TEXT,
        address           TEXT,
        PRIMARY KEY (order_id, method)
    );

    CREATE TABLE htlcs (
        payment_hash      TEXT NOT NULL,
        short_channel_id  TEXT NOT NULL,
        htlc_id           BIGINT NOT NULL,
        amount_msat       BIGINT NOT NULL,
        cltv_expiry       BIGINT NOT NULL,
        received_at_ms    BIGINT NOT NULL,
        resolution        TEXT CHECK (resolution IN ('settled', 'failed')),
        PRIMARY KEY (short_channel_id, htlc_id)
    );
    CREATE INDEX htlcs_by_hash ON htlcs (payment_hash);

    CREATE TABLE channels (
        order_id          TEXT PRIMARY KEY NOT NULL REFERENCES orders (order_id),
        channel_id        TEXT,
        funding_txid      TEXT NOT NULL,
        funding_outnum    BIGINT NOT NULL,
        funded_at_ms      BIGINT NOT NULL,
        expires_at_ms     BIGINT NOT NULL,
        lease_end_block   BIGINT
    );

    CREATE TABLE events (
        seq               BIGSERIAL PRIMARY KEY,
        order_id          TEXT NOT NULL REFERENCES orders (order_id),
        at_ms             BIGINT NOT NULL,
        kind              TEXT NOT NULL,
        from_phase        TEXT,
        to_phase          TEXT,
        detail            TEXT
    );
    CREATE INDEX events_by_order ON events (order_id, seq);
    CREATE FUNCTION lsps1_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'events are append-only';
    END $$;
    CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events
        FOR EACH ROW EXECUTE FUNCTION lsps1_events_append_only();
    CREATE TRIGGER events_append_only_delete BEFORE DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION lsps1_events_append_only();
    "#,
    // v2
    r#"
    ALTER TABLE orders ADD COLUMN token_null BIGINT NOT NULL DEFAULT 0 CHECK (token_null IN (0, 1));
    ALTER TABLE orders ADD COLUMN held_at_ms BIGINT;
    ALTER TABLE orders ADD COLUMN refunded_after_open BIGINT NOT NULL DEFAULT 0
        CHECK (refunded_after_open IN (0, 1));
    ALTER TABLE htlcs ADD COLUMN order_id TEXT REFERENCES orders (order_id);
    CREATE INDEX htlcs_by_order ON htlcs (order_id, resolution);
    CREATE UNIQUE INDEX channels_by_channel_id ON channels (channel_id) WHERE channel_id IS NOT NULL;
    CREATE UNIQUE INDEX channels_by_outpoint ON channels (funding_txid, funding_outnum);
    "#,
    // v3
    r#"
    CREATE INDEX orders_by_client ON orders (client_node_id, phase, expires_at_ms);
    DROP INDEX orders_by_peer;
    CREATE INDEX orders_by_phase_created ON orders (phase, created_at_ms);
    "#,
    // v4
    r#"
    ALTER TABLE payments ADD COLUMN min_confirmations BIGINT;
    ALTER TABLE payments ADD COLUMN surplus_sat BIGINT;
    CREATE UNIQUE INDEX payments_by_address ON payments (address) WHERE address IS NOT NULL;
    ALTER TABLE orders ADD COLUMN reorg_flagged BIGINT NOT NULL DEFAULT 0 CHECK (reorg_flagged IN (0, 1));
    CREATE TABLE chain_outputs (
        txid              TEXT NOT NULL,
        vout              BIGINT NOT NULL,
        order_id          TEXT NOT NULL REFERENCES orders (order_id),
        amount_sat        BIGINT NOT NULL CHECK (amount_sat >= 0),
        blockheight       BIGINT,
        first_seen_ms     BIGINT NOT NULL,
        role              TEXT NOT NULL
            CHECK (role IN ('seen', 'payment', 'refunding', 'refunded', 'dust', 'kept')),
        refund_txid       TEXT,
        PRIMARY KEY (txid, vout)
    );
    CREATE INDEX chain_outputs_by_order ON chain_outputs (order_id);
    CREATE INDEX chain_outputs_open ON chain_outputs (role) WHERE role IN ('seen', 'payment', 'refunding');
    CREATE TABLE chain_refunds (
        txid              TEXT PRIMARY KEY NOT NULL,
        order_id          TEXT NOT NULL REFERENCES orders (order_id),
        psbt              TEXT NOT NULL,
        inputs            TEXT NOT NULL,
        destination       TEXT NOT NULL,
        amount_sat        BIGINT NOT NULL,
        fee_sat           BIGINT NOT NULL,
        feerate_perkw     BIGINT NOT NULL,
        created_height    BIGINT NOT NULL,
        created_at_ms     BIGINT NOT NULL,
        state             TEXT NOT NULL CHECK (state IN ('signed', 'broadcast', 'replaced', 'confirmed')),
        replaces          TEXT,
        kind              TEXT NOT NULL DEFAULT 'whole' CHECK (kind IN ('whole', 'surplus'))
    );
    CREATE INDEX chain_refunds_by_order ON chain_refunds (order_id);
    CREATE INDEX chain_refunds_open ON chain_refunds (state) WHERE state IN ('signed', 'broadcast');
    ALTER TABLE channels ADD COLUMN funding_state TEXT
        CHECK (funding_state IN ('confirmed', 'bumped', 'flagged', 'unwatched'));
    ALTER TABLE channels ADD COLUMN funding_child TEXT;
    UPDATE channels SET funding_state = 'unwatched';
    CREATE INDEX channels_funding_watched ON channels (order_id) WHERE funding_state IS NULL OR funding_state = 'bumped';
    CREATE TABLE chain_blocks (
        height            BIGINT PRIMARY KEY NOT NULL,
        hash              TEXT NOT NULL
    );
    "#,
    // v5: the running totals, kept by PL/pgSQL triggers as by SQLite's.
    r#"
    CREATE TABLE stats_phase (phase TEXT PRIMARY KEY NOT NULL, orders BIGINT NOT NULL);
    CREATE TABLE stats_daily (
        day               BIGINT PRIMARY KEY NOT NULL,
        created           BIGINT NOT NULL DEFAULT 0,
        completed         BIGINT NOT NULL DEFAULT 0,
        failed            BIGINT NOT NULL DEFAULT 0,
        revenue_sat       BIGINT NOT NULL DEFAULT 0,
        capacity_sat      BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE stats_refunds (cause TEXT PRIMARY KEY NOT NULL, refunds BIGINT NOT NULL);
    CREATE TABLE stats_lease_ends (
        block             BIGINT PRIMARY KEY NOT NULL,
        channels          BIGINT NOT NULL,
        leased_sat        BIGINT NOT NULL
    );

    CREATE FUNCTION lsps1_paid_fee(o orders) RETURNS BIGINT LANGUAGE sql STABLE AS $$
        SELECT COALESCE((SELECT p.fee_total_sat FROM payments p
            WHERE p.order_id = o.order_id AND p.method = o.paid_method), o.fee_total_sat)
    $$;

    CREATE FUNCTION lsps1_stats_order_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO stats_phase (phase, orders) VALUES (NEW.phase, 1)
            ON CONFLICT (phase) DO UPDATE SET orders = stats_phase.orders + 1;
        INSERT INTO stats_daily (day, created) VALUES (NEW.created_at_ms / 86400000, 1)
            ON CONFLICT (day) DO UPDATE SET created = stats_daily.created + 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER stats_order_insert AFTER INSERT ON orders
        FOR EACH ROW EXECUTE FUNCTION lsps1_stats_order_insert();

    CREATE FUNCTION lsps1_stats_order_phase() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE stats_phase SET orders = orders - 1 WHERE phase = OLD.phase;
        INSERT INTO stats_phase (phase, orders) VALUES (NEW.phase, 1)
            ON CONFLICT (phase) DO UPDATE SET orders = stats_phase.orders + 1;
        IF NEW.phase = 'completed' THEN
            INSERT INTO stats_daily (day, completed, revenue_sat, capacity_sat)
                VALUES (NEW.updated_at_ms / 86400000, 1, lsps1_paid_fee(NEW), NEW.lsp_balance_sat)
                ON CONFLICT (day) DO UPDATE SET completed = stats_daily.completed + 1,
                    revenue_sat = stats_daily.revenue_sat + excluded.revenue_sat,
                    capacity_sat = stats_daily.capacity_sat + excluded.capacity_sat;
        ELSIF NEW.phase = 'failed' THEN
            INSERT INTO stats_daily (day, failed) VALUES (NEW.updated_at_ms / 86400000, 1)
                ON CONFLICT (day) DO UPDATE SET failed = stats_daily.failed + 1;
            IF OLD.phase IN ('payment_held', 'opening') THEN
                INSERT INTO stats_refunds (cause, refunds) VALUES (COALESCE(NEW.failure_reason, 'unknown'), 1)
                    ON CONFLICT (cause) DO UPDATE SET refunds = stats_refunds.refunds + 1;
            END IF;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER stats_order_phase AFTER UPDATE OF phase ON orders
        FOR EACH ROW WHEN (NEW.phase <> OLD.phase) EXECUTE FUNCTION lsps1_stats_order_phase();

    CREATE FUNCTION lsps1_stats_refunded_after_open() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE stats_daily SET revenue_sat = revenue_sat - lsps1_paid_fee(NEW)
            WHERE day = NEW.updated_at_ms / 86400000;
        INSERT INTO stats_refunds (cause, refunds) VALUES ('refunded_after_open', 1)
            ON CONFLICT (cause) DO UPDATE SET refunds = stats_refunds.refunds + 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER stats_refunded_after_open AFTER UPDATE OF refunded_after_open ON orders
        FOR EACH ROW WHEN (NEW.refunded_after_open = 1 AND OLD.refunded_after_open = 0 AND NEW.phase = 'completed')
        EXECUTE FUNCTION lsps1_stats_refunded_after_open();

    CREATE FUNCTION lsps1_stats_chain_refund() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO stats_refunds (cause, refunds) VALUES ('onchain_' || NEW.kind, 1)
            ON CONFLICT (cause) DO UPDATE SET refunds = stats_refunds.refunds + 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER stats_chain_refund AFTER INSERT ON chain_refunds
        FOR EACH ROW WHEN (NEW.replaces IS NULL) EXECUTE FUNCTION lsps1_stats_chain_refund();

    CREATE FUNCTION lsps1_stats_lease_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO stats_lease_ends (block, channels, leased_sat)
            SELECT NEW.lease_end_block, 1, lsp_balance_sat FROM orders WHERE order_id = NEW.order_id
            ON CONFLICT (block) DO UPDATE SET channels = stats_lease_ends.channels + 1,
                leased_sat = stats_lease_ends.leased_sat + excluded.leased_sat;
        RETURN NULL;
    END $$;
    CREATE TRIGGER stats_lease_insert AFTER INSERT ON channels
        FOR EACH ROW WHEN (NEW.lease_end_block IS NOT NULL) EXECUTE FUNCTION lsps1_stats_lease_insert();

    CREATE FUNCTION lsps1_stats_lease_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE stats_lease_ends SET channels = channels - 1,
            leased_sat = leased_sat - (SELECT lsp_balance_sat FROM orders WHERE order_id = OLD.order_id)
            WHERE block = OLD.lease_end_block;
        RETURN NULL;
    END $$;
    CREATE TRIGGER stats_lease_delete AFTER DELETE ON channels
        FOR EACH ROW WHEN (OLD.lease_end_block IS NOT NULL) EXECUTE FUNCTION lsps1_stats_lease_delete();

    INSERT INTO stats_phase (phase, orders) SELECT phase, COUNT(*) FROM orders GROUP BY phase;
    INSERT INTO stats_daily (day, created) SELECT created_at_ms / 86400000, COUNT(*) FROM orders GROUP BY 1;
    INSERT INTO stats_daily (day, completed, revenue_sat, capacity_sat)
        SELECT e.at_ms / 86400000, COUNT(*),
            SUM(CASE WHEN o.refunded_after_open = 1 THEN 0 ELSE COALESCE(p.fee_total_sat, o.fee_total_sat) END),
            SUM(o.lsp_balance_sat)
        FROM events e JOIN orders o ON o.order_id = e.order_id
        LEFT JOIN payments p ON p.order_id = o.order_id AND p.method = o.paid_method
        WHERE e.to_phase = 'completed' AND o.phase = 'completed' GROUP BY 1
        ON CONFLICT (day) DO UPDATE SET completed = excluded.completed,
            revenue_sat = excluded.revenue_sat, capacity_sat = excluded.capacity_sat;
    INSERT INTO stats_daily (day, failed)
        SELECT e.at_ms / 86400000, COUNT(*) FROM events e JOIN orders o ON o.order_id = e.order_id
        WHERE e.to_phase = 'failed' AND o.phase = 'failed' GROUP BY 1
        ON CONFLICT (day) DO UPDATE SET failed = excluded.failed;
    INSERT INTO stats_refunds (cause, refunds)
        SELECT COALESCE(o.failure_reason, 'unknown'), COUNT(*) FROM events e JOIN orders o ON o.order_id = e.order_id
        WHERE e.to_phase = 'failed' AND e.from_phase IN ('payment_held', 'opening') GROUP BY 1;
    INSERT INTO stats_refunds (cause, refunds)
        SELECT 'refunded_after_open', COUNT(*) FROM orders WHERE refunded_after_open = 1 AND phase = 'completed'
        HAVING COUNT(*) > 0;
    INSERT INTO stats_refunds (cause, refunds)
        SELECT 'onchain_' || kind, COUNT(*) FROM chain_refunds WHERE replaces IS NULL GROUP BY 1
        ON CONFLICT (cause) DO UPDATE SET refunds = stats_refunds.refunds + excluded.refunds;
    INSERT INTO stats_lease_ends (block, channels, leased_sat)
        SELECT c.lease_end_block, COUNT(*), SUM(o.lsp_balance_sat) FROM channels c JOIN orders o ON o.order_id = c.order_id
        WHERE c.lease_end_block IS NOT NULL GROUP BY 1;

    CREATE INDEX htlcs_unresolved ON htlcs (cltv_expiry) WHERE resolution IS NULL;
    CREATE INDEX channels_by_lease_end ON channels (lease_end_block) WHERE lease_end_block IS NOT NULL;
    ALTER TABLE channels ADD COLUMN lease_state TEXT CHECK (lease_state IN ('ended', 'closing', 'closed'));
    ALTER TABLE channels ADD COLUMN activity_count BIGINT;
    ALTER TABLE channels ADD COLUMN active_height BIGINT;
    CREATE INDEX channels_lease_running ON channels (lease_end_block)
        WHERE lease_end_block IS NOT NULL AND lease_state IS NULL;
    CREATE INDEX channels_lease_open ON channels (lease_end_block)
        WHERE lease_end_block IS NOT NULL AND lease_state IN ('ended', 'closing');
    "#,
    // v6 (several nodes, one order book): the node that sells each order, which alone
    // drives it ('' until a node claims the orders recorded before it; see
    // `Store::for_node`); the address a REST order came from, so that per-address limits
    // count on every node; each node's own view of the chain.
    r#"
    ALTER TABLE orders ADD COLUMN node_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE orders ADD COLUMN client_ip TEXT;
    CREATE INDEX orders_by_node_phase ON orders (node_id, phase, expires_at_ms);
    CREATE INDEX orders_unpaid_by_ip ON orders (client_ip, expires_at_ms)
        WHERE phase = 'awaiting_payment' AND client_ip IS NOT NULL;
    DROP TABLE chain_blocks;
    CREATE TABLE chain_blocks (
        node_id TEXT NOT NULL,
        height BIGINT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (node_id, height)
    );
    "#,
    // v7: the running totals spread over 16 slots (the writer's backend pid picks one), so
    // that concurrent writers (several nodes, many clients) do not queue on one hot row
    // for the length of their transactions; the figures read the sum of the slots. SQLite
    // has one writer and keeps one row.
    r#"
    ALTER TABLE stats_phase ADD COLUMN slot BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE stats_phase DROP CONSTRAINT stats_phase_pkey;
    ALTER TABLE stats_phase ADD PRIMARY KEY (phase, slot);
    ALTER TABLE stats_daily ADD COLUMN slot BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE stats_daily DROP CONSTRAINT stats_daily_pkey;
    ALTER TABLE stats_daily ADD PRIMARY KEY (day, slot);

    CREATE FUNCTION lsps1_stats_slot() RETURNS BIGINT LANGUAGE sql STABLE AS $$
        SELECT (pg_backend_pid() % 16)::bigint
    $$;

    CREATE OR REPLACE FUNCTION lsps1_stats_order_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO stats_phase (phase, slot, orders) VALUES (NEW.phase, lsps1_stats_slot(), 1)
            ON CONFLICT (phase, slot) DO UPDATE SET orders = stats_phase.orders + 1;
        INSERT INTO stats_daily (day, slot, created) VALUES (NEW.created_at_ms / 86400000, lsps1_stats_slot(), 1)
            ON CONFLICT (day, slot) DO UPDATE SET created = stats_daily.created + 1;
        RETURN NULL;
    END $$;

    CREATE OR REPLACE FUNCTION lsps1_stats_order_phase() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO stats_phase (phase, slot, orders) VALUES (OLD.phase, lsps1_stats_slot(), -1)
            ON CONFLICT (phase, slot) DO UPDATE SET orders = stats_phase.orders - 1;
        INSERT INTO stats_phase (phase, slot, orders) VALUES (NEW.phase, lsps1_stats_slot(), 1)
            ON CONFLICT (phase, slot) DO UPDATE SET orders = stats_phase.orders + 1;
        IF NEW.phase = 'completed' THEN
            INSERT INTO stats_daily (day, slot, completed, revenue_sat, capacity_sat)
                VALUES (NEW.updated_at_ms / 86400000, lsps1_stats_slot(), 1, lsps1_paid_fee(NEW), NEW.lsp_balance_sat)
                ON CONFLICT (day, slot) DO UPDATE SET completed = stats_daily.completed + 1,
                    revenue_sat = stats_daily.revenue_sat + excluded.revenue_sat,
                    capacity_sat = stats_daily.capacity_sat + excluded.capacity_sat;
        ELSIF NEW.phase = 'failed' THEN
            INSERT INTO stats_daily (day, slot, failed) VALUES (NEW.updated_at_ms / 86400000, lsps1_stats_slot(), 1)
                ON CONFLICT (day, slot) DO UPDATE SET failed = stats_daily.failed + 1;
            IF OLD.phase IN ('payment_held', 'opening') THEN
                INSERT INTO stats_refunds (cause, refunds) VALUES (COALESCE(NEW.failure_reason, 'unknown'), 1)
                    ON CONFLICT (cause) DO UPDATE SET refunds = stats_refunds.refunds + 1;
            END IF;
        END IF;
        RETURN NULL;
    END $$;

    CREATE OR REPLACE FUNCTION lsps1_stats_refunded_after_open() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO stats_daily (day, slot, revenue_sat)
            VALUES (NEW.updated_at_ms / 86400000, lsps1_stats_slot(), -lsps1_paid_fee(NEW))
            ON CONFLICT (day, slot) DO UPDATE SET revenue_sat = stats_daily.revenue_sat + excluded.revenue_sat;
        INSERT INTO stats_refunds (cause, refunds) VALUES ('refunded_after_open', 1)
            ON CONFLICT (cause) DO UPDATE SET refunds = stats_refunds.refunds + 1;
        RETURN NULL;
    END $$;
    "#,
];
