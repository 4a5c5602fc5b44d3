/* A cheap, conservative scan of SQL text for statements whose effect
 * outlives the transaction (session state). A false positive only costs
 * sharing (the agent keeps its backend); the list errs on that side. */
#ifndef PGB_SQLSCAN_H
#define PGB_SQLSCAN_H

/* 1 when the text may change session state: SET (not LOCAL, TRANSACTION or
 * CONSTRAINTS), RESET ROLE/SESSION..., PREPARE, DEALLOCATE, DISCARD, LISTEN,
 * DECLARE ... WITH HOLD, CREATE TEMP and objects named in pg_temp, LOAD,
 * session advisory locks, set_config(), dblink connections (also by quoted
 * names), and DO (its body is not scanned). */
int sql_changes_session(const char *sql);

/* 1 when an error rolls back all that the text did: one statement, not
 * CALL or DO (a procedure or DO block may COMMIT part of its work first),
 * nor transaction control. Only such a text may be run again after
 * 40001 or 40P01 outside a transaction. */
int sql_all_or_nothing(const char *sql);

/* 1 when a statement of the text may commit the transaction it runs in:
 * COMMIT (also COMMIT PREPARED), END, PREPARE TRANSACTION. */
int sql_may_commit(const char *sql);

/* 1 when a statement of the text begins or ends a transaction: BEGIN,
 * START TRANSACTION, COMMIT, END, ROLLBACK (also TO SAVEPOINT), ABORT. */
int sql_txn_control(const char *sql);

/* 1 when the text is one plain statement that cannot leave a transaction
 * open: it starts with SELECT, INSERT, UPDATE, DELETE, WITH, VALUES, TABLE
 * or SHOW, and holds no second statement. Such statements from different
 * agents may share a backend's pipeline, each with its own Sync. */
int sql_pipelinable(const char *sql);

#endif
