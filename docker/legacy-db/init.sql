-- The legacy CRM of the docker-compose demo (run once, on the first start of legacy-db).
-- The schema is crossfade.embedded.crm.SCHEMA, the one `crossfade demo` and the tests use
-- (tests/deploy/test_compose.py checks that they stay the same).
CREATE TABLE IF NOT EXISTS public.accounts (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    industry text,
    annual_revenue numeric(14,2),
    employees integer,
    tags text[],
    metadata jsonb,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamp
);
CREATE TABLE IF NOT EXISTS public.contacts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id bigint,
    first_name text,
    last_name text,
    email text,
    phone text,
    birth_date date,
    notes text,
    score double precision,
    updated_at timestamptz
);
CREATE TABLE IF NOT EXISTS public.addresses (
    id bigserial PRIMARY KEY,
    contact_id uuid,
    kind text,
    street text,
    city text,
    postcode text,
    country char(2)
);

-- A few rows so the initial snapshot has something to carry; write more with psql
-- (docs/deploy.md) and watch them arrive in new-db.
INSERT INTO public.accounts (name, industry, annual_revenue, employees, tags, metadata, updated_at)
SELECT 'Account ' || g, (ARRAY['retail', 'banking', 'logistics'])[1 + g % 3], g * 1000.25, g * 3,
       ARRAY['seed', 'tier-' || (g % 4)], jsonb_build_object('seed', g), now()::timestamp
FROM generate_series(1, 200) AS g;

INSERT INTO public.contacts (account_id, first_name, last_name, email, birth_date, score, updated_at)
SELECT 1 + g % 200, 'First' || g, 'Last' || g, 'contact' || g || '@example.com',
       date '1970-01-01' + g * 37, g / 7.0, now()
FROM generate_series(1, 500) AS g;

INSERT INTO public.addresses (contact_id, kind, street, city, postcode, country)
SELECT id, 'billing', 'Main Street ' || row_number() OVER (), 'Springfield', '12345', 'US'
FROM public.contacts;
