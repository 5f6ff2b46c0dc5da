-- The service's pools log in as pos_app and pos_api themselves, instead of
-- logging in as the migrating user and switching with SET ROLE: a session's
-- RESET ROLE returns to its login, so the login must be the role, one that
-- is no superuser, has no BYPASSRLS and is not a member of the migrating
-- user (SPEC §3: the API connects as a role that owns no table and has no
-- BYPASSRLS). Roles created before these migrations by someone else are
-- checked for that, not trusted.
--
-- Roles are cluster-wide and several databases of one cluster may migrate at
-- once; an ALTER ROLE that loses a race with another one on the same role
-- fails ("tuple concurrently updated"), so a failure is ignored when the
-- role can log in afterwards. Giving a role LOGIN needs CREATEROLE (and, on
-- PostgreSQL 16 and later, ADMIN OPTION on the role); without it the
-- migration stops and says what to run. Passwords are not set here: locally
-- the server trusts loopback connections; in production give each role a
-- password or certificate and name the logins in POS_APP_DATABASE_URL and
-- POS_API_DATABASE_URL, and let pg_hba.conf admit them to this database
-- only (LOGIN lets them try every database of the cluster).

-- +goose Up

-- +goose StatementBegin
DO $$
DECLARE
    r text;
    role pg_roles%ROWTYPE;
BEGIN
    FOREACH r IN ARRAY ARRAY['pos_app', 'pos_api'] LOOP
        SELECT * INTO role FROM pg_roles WHERE rolname = r;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'role % does not exist', r;
        END IF;
        IF role.rolsuper OR role.rolbypassrls OR pg_has_role(r, current_user, 'MEMBER') THEN
            RAISE EXCEPTION 'role % must not be a superuser, have BYPASSRLS or be a member of %', r, current_user
                USING HINT = 'it is the login of the service''s pools; ALTER ROLE it NOSUPERUSER NOBYPASSRLS and revoke the membership';
        END IF;
        IF NOT role.rolcanlogin THEN
            BEGIN
                EXECUTE format('ALTER ROLE %I LOGIN', r);
            EXCEPTION WHEN OTHERS THEN
                IF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = r) THEN
                    RAISE EXCEPTION 'cannot let role % log in: %', r, SQLERRM
                        USING HINT = 'a role with CREATEROLE (and, from PostgreSQL 16, ADMIN OPTION on both roles) must run: ALTER ROLE pos_app LOGIN; ALTER ROLE pos_api LOGIN';
                END IF;
            END;
        END IF;
    END LOOP;
    -- A later REVOKE CONNECT ... FROM PUBLIC must not lock the pools out.
    -- Only the database's owner may grant it; PUBLIC's default does
    -- meanwhile.
    BEGIN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO pos_app, pos_api', current_database());
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'CONNECT on database % not granted to pos_app and pos_api: %', current_database(), SQLERRM;
    END;
END
$$;
-- +goose StatementEnd
