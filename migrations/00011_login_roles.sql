-- The service's pools log in as pos_app and pos_api themselves, instead of
-- logging in as the migrating user and switching with SET ROLE: a session
-- whose login owns nothing cannot RESET ROLE back to one that does (SPEC §3:
-- the API connects as a role that owns no table and has no BYPASSRLS).
--
-- Roles are cluster-wide and several databases of one cluster may migrate at
-- once; an ALTER ROLE that loses a race with another one on the same role
-- fails ("tuple concurrently updated"), so a failure is ignored when the
-- role can log in afterwards. Passwords are not set here: locally the
-- server trusts loopback connections; in production set one (ALTER ROLE
-- pos_app PASSWORD …) or use certificates, and name the logins in
-- POS_APP_DATABASE_URL and POS_API_DATABASE_URL.

-- +goose Up

-- +goose StatementBegin
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['pos_app', 'pos_api'] LOOP
        IF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('ALTER ROLE %I LOGIN', r);
            EXCEPTION WHEN OTHERS THEN
                IF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = r) THEN
                    RAISE;
                END IF;
            END;
        END IF;
    END LOOP;
END
$$;
-- +goose StatementEnd
