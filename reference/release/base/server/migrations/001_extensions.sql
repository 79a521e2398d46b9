-- Extensions PayCraft relies on. supabase/postgres ships them in schema
-- "extensions"; this keeps a plain Postgres 15 working too.
CREATE SCHEMA IF NOT EXISTS extensions;
CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;
CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA extensions;
