/* What a statement text does, as PostgreSQL's own parser (libpg_query,
 * PostgreSQL 15's grammar) reads it: one classification per distinct text,
 * kept in a bounded cache so a repeated text is parsed once. A text the
 * parser cannot read is taken for the worst: it changes session state, may
 * commit, is neither all-or-nothing nor pipelinable. What runs inside a
 * function body is invisible here (see docs/classification.md).
 * Not thread-safe: the broker's loop thread only. */
#ifndef PGB_CLASSIFY_H
#define PGB_CLASSIFY_H

#include <stddef.h>
#include <stdint.h>

#define SQL_SESSION        0x01u   /* may change session state */
#define SQL_TXN_CONTROL    0x02u   /* begins or ends a transaction */
#define SQL_MAY_COMMIT     0x04u   /* may commit the transaction it runs in */
#define SQL_ALL_OR_NOTHING 0x08u   /* an error undoes all it did */
#define SQL_PIPELINABLE    0x10u   /* may share a backend's pipeline */
#define SQL_UNPARSED       0x20u   /* the parser refused it: worst case assumed */
#define SQL_UNCLEAN        0x40u   /* session state DISCARD ALL does not undo (LOAD,
				      setseed, dblink_connect...): close the backend */
#define SQL_ROLLBACK       0x80u   /* the text is one plain ROLLBACK (ABORT): not TO
				      SAVEPOINT, PREPARED nor AND CHAIN */
#define SQL_COMMIT        0x100u   /* the text is one plain COMMIT (END): not AND
				      CHAIN nor PREPARED */
#define SQL_BEGIN         0x200u   /* the text is one BEGIN or START TRANSACTION whose
				      modes (each given once) cannot fail on a primary:
				      the broker may answer it and send it later */
#define SQL_BEGIN_PRIMARY 0x400u   /* ...with ISOLATION LEVEL SERIALIZABLE or READ
				      WRITE: a hot standby refuses these */
#define SQL_START        0x1000u   /* ...SQL_BEGIN spelt START TRANSACTION: its tag */
#define SQL_SINGLE        0x800u   /* exactly one statement, not COPY: it may run with
				      the extended protocol in a pipeline */
#define SQL_LISTEN         0x2000u /* the text is one LISTEN or UNLISTEN (still
				      SQL_SESSION: on a backend it would be) */

#define CLASS_SETS      1024              /* cache: sets of CLASS_WAYS entries */
#define CLASS_WAYS      4
#define CLASS_TEXT_MAX  4096              /* longer texts are parsed every time */
#define CLASS_BYTES_MAX (4u << 20)        /* texts held by the cache at most */

/* The SQL_* flags of sql (a NUL-terminated text of any number of
 * statements), from the cache or parsed now. */
unsigned sql_classify(const char *sql);

/* 1 when the text may change session state: SET and RESET (not LOCAL nor
 * TRANSACTION), PREPARE, DEALLOCATE, DISCARD, LISTEN, UNLISTEN, LOAD, DO,
 * DECLARE ... WITH HOLD, temporary objects (TEMP or in pg_temp), writes to
 * pg_settings, and calls of set_config, session advisory locks, setseed,
 * dblink_connect and replication-slot or origin session functions, under
 * any spelling the parser resolves. */
int sql_changes_session(const char *sql);

/* 1 when an error rolls back all that the text did: at most one statement,
 * not CALL or DO (a procedure or DO block may COMMIT part of its work),
 * transaction control, PREPARE, VACUUM, CLUSTER, nor a CONCURRENTLY index
 * command. Only such a text may be run again after 40001 or 40P01 outside
 * a transaction. */
int sql_all_or_nothing(const char *sql);

/* 1 when a statement of the text may commit the transaction it runs in:
 * COMMIT (also END, COMMIT PREPARED), PREPARE TRANSACTION. */
int sql_may_commit(const char *sql);

/* 1 when a statement of the text begins or ends a transaction: BEGIN,
 * START TRANSACTION, COMMIT, END, ROLLBACK (also TO SAVEPOINT), ABORT,
 * PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED. */
int sql_txn_control(const char *sql);

/* 1 when the text is one SELECT (VALUES, TABLE, WITH), INSERT, UPDATE,
 * DELETE, MERGE or SHOW that leaves no session state: it cannot leave a
 * transaction open, so statements from different agents may share a
 * backend's pipeline, each with its own Sync. */
int sql_pipelinable(const char *sql);

/* 1 when the text is exactly one plain ROLLBACK: ROLLBACK or ABORT, maybe
 * WORK or TRANSACTION and AND NO CHAIN; not ROLLBACK TO SAVEPOINT,
 * ROLLBACK PREPARED nor AND CHAIN, and no other statement in the text. */
int sql_is_rollback(const char *sql);

/* 1 when the text is exactly one plain COMMIT or END (not AND CHAIN). */
int sql_is_commit(const char *sql);
enum sql_listen_kind { SQL_LISTEN_NONE = 0, SQL_LISTEN_ON, SQL_UNLISTEN, SQL_UNLISTEN_ALL };

/* For a text that is one LISTEN ch, UNLISTEN ch or UNLISTEN * (SQL_LISTEN):
 * which, with the channel's name as PostgreSQL reads it (case folded,
 * quotes and escapes resolved, cut to 63 bytes) in chan (n >= 64 bytes).
 * SQL_LISTEN_NONE for any other text. Parses the text each time. */
enum sql_listen_kind sql_listen(const char *sql, char *chan, size_t n);

struct sql_class_stats {
	uint64_t parses;    /* texts given to the parser */
	uint64_t hits;      /* answered from the cache */
	uint32_t entries;   /* texts in the cache now */
	uint64_t bytes;     /* their size */
};
void sql_class_stats(struct sql_class_stats *st);

/* Empty the cache (and count from zero). */
void sql_class_reset(void);
/* Empty the cache and release the parser's memory: the last call (the
 * parser cannot be used again in this process). */
void sql_class_exit(void);

#endif
