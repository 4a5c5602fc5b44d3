-- Run by psql -X -f directly and through the drop-in libpq; the two
-- outputs must be the same (tests/libpq/run.sh, section psql).
\set ON_ERROR_STOP 0
CREATE TABLE libpq_psql (id int PRIMARY KEY, v text, n numeric(6,2));
CREATE SEQUENCE libpq_watch;
DROP TABLE IF EXISTS libpq_no_such_table;
DO $$ BEGIN RAISE NOTICE 'a notice with % and a hint', 42 USING HINT = 'the hint'; END $$;
SELECT 1 AS one; SELECT 'two' AS two, NULL::int AS nothing;
BEGIN;
INSERT INTO libpq_psql VALUES (1, 'a', 1.5), (2, 'b', 2.25);
UPDATE libpq_psql SET v = 'c' WHERE id = 2;
COMMIT;
BEGIN;
DELETE FROM libpq_psql;
ROLLBACK;
SELECT * FROM libpq_psql ORDER BY id;
BEGIN;
INSERT INTO libpq_psql VALUES (1, 'duplicate', 0);
SELECT 'aborted' AS in_failed_transaction;
ROLLBACK;
SELECT count(*) AS n, max(id) AS top FROM libpq_psql \gset
\echo n=:n top=:top
SELECT :n + :top AS sum, :'n' || ' rows' AS text;
SELECT v, length(v) FROM libpq_psql WHERE id = 1
\gset got_
\echo got_v=:got_v got_length=:got_length
SELECT 10 / (3 - nextval('libpq_watch')) AS quotient \watch 0.1
\set ON_ERROR_STOP 1
SELECT 'before the error' AS stage;
SELECT * FROM libpq_no_such_table;
SELECT 'not reached' AS stage;
