//! `serve.row_security`: the PostgreSQL setup Supabase projects come with
//! (roles, the `auth` schema and its functions), made idempotently at start.
//! The requests themselves are scoped in `rest::access::database_for`.

use truststream_core::Error;
use truststream_core_db::{Database, Params};

/// Serializes concurrent setups on one database (two servers starting):
/// `CREATE OR REPLACE FUNCTION` and `GRANT` race otherwise ("tuple
/// concurrently updated").
const LOCK: i64 = 0x7473_726c_7301;

/// One statement, under the setup lock.
fn locked(body: &str) -> String {
    format!("DO $ts$ BEGIN PERFORM pg_advisory_xact_lock({LOCK}); {body} END $ts$")
}

/// `role` (a fixed name) made NOLOGIN NOINHERIT when missing. Roles are
/// shared by every database of the server: another database's setup may
/// make it at the same moment.
fn role(name: &str) -> String {
    locked(&format!(
        "IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{name}') THEN \
           BEGIN CREATE ROLE {name} NOLOGIN NOINHERIT; \
           EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END; \
         END IF;"
    ))
}

/// `CREATE OR REPLACE FUNCTION auth.<name>()` when it is missing or the
/// server's database user owns it (so a setup made once by an
/// administrator, or Supabase's own functions, are left as they are).
fn function(name: &str, create: &str) -> String {
    locked(&format!(
        "IF pg_catalog.to_regprocedure('auth.{name}()') IS NULL \
            OR (SELECT pg_catalog.pg_get_userbyid(proowner) FROM pg_catalog.pg_proc \
                 WHERE oid = pg_catalog.to_regprocedure('auth.{name}()')) = current_user THEN \
           {create} \
         END IF;"
    ))
}

/// Reads a claim like Supabase's `auth.uid()` / `auth.role()`: the single
/// setting, else the claim in `request.jwt.claims`.
fn claim_function(name: &str, claim: &str, ty: &str) -> String {
    function(
        name,
        &format!(
            "CREATE OR REPLACE FUNCTION auth.{name}() RETURNS {ty} LANGUAGE sql STABLE AS $fn$ \
               SELECT coalesce( \
                 nullif(current_setting('request.jwt.claim.{claim}', true), ''), \
                 (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> '{claim}') \
               )::{ty} \
             $fn$;"
        ),
    )
}

/// USAGE on the schema `schema` (an SQL expression) for the three roles,
/// each unless it has it (a user that may not grant, with the grants made
/// once by an administrator, passes).
fn usage(schema: &str) -> String {
    locked(&format!(
        "DECLARE s text := {schema}; r text; BEGIN \
           IF s IS NOT NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = s) THEN \
             FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP \
               IF NOT pg_catalog.has_schema_privilege(r, s, 'USAGE') THEN \
                 EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA %I TO %I', s, r); \
               END IF; \
             END LOOP; \
           END IF; \
         END;"
    ))
}

/// The setup statements, in order (each one statement, idempotent, and
/// each step skipped when already done, so that a database user without
/// CREATEROLE passes once an administrator ran it).
pub(crate) fn statements() -> Vec<String> {
    vec![
        role("anon"),
        role("authenticated"),
        role("service_role"),
        // Only a superuser may give BYPASSRLS: without it, say so and go
        // on (the server runs the service role unscoped anyway).
        locked(
            "IF NOT (SELECT rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = 'service_role') \
             THEN BEGIN ALTER ROLE service_role BYPASSRLS; \
               EXCEPTION WHEN insufficient_privilege THEN \
                 RAISE WARNING 'service_role lacks BYPASSRLS (only a superuser can give it)'; \
             END; END IF;",
        ),
        // The provider's user runs requests as these roles (SET ROLE needs
        // membership; a superuser has it already).
        locked(
            "IF NOT pg_catalog.pg_has_role(current_user, 'anon', 'MEMBER') THEN \
               GRANT anon TO CURRENT_USER; END IF; \
             IF NOT pg_catalog.pg_has_role(current_user, 'authenticated', 'MEMBER') THEN \
               GRANT authenticated TO CURRENT_USER; END IF; \
             IF NOT pg_catalog.pg_has_role(current_user, 'service_role', 'MEMBER') THEN \
               GRANT service_role TO CURRENT_USER; END IF;",
        ),
        locked(
            "IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'auth') THEN \
               CREATE SCHEMA auth; END IF;",
        ),
        claim_function("uid", "sub", "uuid"),
        claim_function("role", "role", "text"),
        function(
            "jwt",
            "CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $fn$ \
               SELECT coalesce( \
                 nullif(current_setting('request.jwt.claim', true), ''), \
                 nullif(current_setting('request.jwt.claims', true), '') \
               )::jsonb \
             $fn$;",
        ),
        usage("'auth'"),
        usage("'public'"),
        // The provider's schema (its connections' search path).
        usage("current_schema()"),
    ]
}

/// Checks that `db` can scope calls and runs the setup, one statement per
/// `raw_query`. Errors name `serve.row_security`.
pub(crate) async fn setup(db: &dyn Database) -> Result<(), Error> {
    let caps = db.capabilities();
    if !caps.row_security || !caps.raw_sql {
        return Err(Error::invalid_input(format!(
            "serve.row_security = true needs a database with row-level security (PostgreSQL); \
             the {} database provider (with its layers) has none: set serve.row_security = false \
             or use PostgreSQL",
            db.info().name
        )));
    }
    let none = Params::new();
    for sql in statements() {
        db.raw_query(&sql, &none).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "serve.row_security: the PostgreSQL setup (roles anon, authenticated, \
                     service_role; schema auth) failed: {} (the database user needs CREATEROLE, \
                     or run the setup once as a superuser)",
                    e.message()
                ),
            )
            .with_source(e)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_one_do_block_under_the_lock() {
        for s in statements() {
            assert!(
                s.starts_with("DO $ts$ BEGIN PERFORM pg_advisory_xact_lock("),
                "{s}"
            );
            assert!(s.ends_with(" END $ts$"), "{s}");
            assert_eq!(s.matches("$ts$").count(), 2, "{s}");
        }
    }
}
