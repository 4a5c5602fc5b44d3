/* Statement classification by PostgreSQL's parser, and its cache; see
 * classify.h. The parse tree comes as libpg_query's protobuf message and is
 * walked generically through the protobuf-c descriptors, so every node of
 * every statement is seen (subqueries, CTEs, FROM functions, rule actions,
 * EXPLAIN's statement), not only the places a hand-written rule expects. */
#include "classify.h"

#include <errno.h>
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "stmtcache.h"

#define WALK_DEPTH_MAX 10000	/* deeper trees are taken for the worst */
#define CURSOR_OPT_HOLD 0x0020	/* PostgreSQL's parsenodes.h */
#define SQL_COPY (1u << 30)	/* stmt_flags only: a COPY (never in a result) */

/* pg_temp or pg_temp_<n>: the session's own schema for temporary objects. */
static int temp_schema(const char *s)
{
	if (strncasecmp(s, "pg_temp", 7) != 0)
		return 0;
	if (s[7] == '\0')
		return 1;
	if (s[7] != '_' || s[8] == '\0')
		return 0;
	for (s += 8; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

/* The SQL_* flags a call of the function leaves: state in the session,
 * and state DISCARD ALL does not undo. Compared without case: a quoted
 * "SET_CONFIG" is another function, but pinning costs only sharing. */
static unsigned session_function(const char *name)
{
	static const struct {
		const char *name;
		unsigned flags;
	} fns[] = {
		{ "set_config", SQL_SESSION },
		{ "pg_advisory_lock", SQL_SESSION },
		{ "pg_advisory_lock_shared", SQL_SESSION },
		{ "pg_try_advisory_lock", SQL_SESSION },
		{ "pg_try_advisory_lock_shared", SQL_SESSION },
		/* the random() sequence, a remote connection, a replication
		 * origin or temporary slot: DISCARD ALL leaves them */
		{ "setseed", SQL_SESSION | SQL_UNCLEAN },
		{ "dblink_connect", SQL_SESSION | SQL_UNCLEAN },
		{ "dblink_connect_u", SQL_SESSION | SQL_UNCLEAN },
		{ "pg_replication_origin_session_setup", SQL_SESSION | SQL_UNCLEAN },
		{ "pg_create_logical_replication_slot", SQL_SESSION | SQL_UNCLEAN },
		{ "pg_create_physical_replication_slot", SQL_SESSION | SQL_UNCLEAN },
	};

	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
		if (strcasecmp(name, fns[i].name) == 0)
			return fns[i].flags;
	return 0;
}

/* The last name of a qualified name list (pg_catalog.set_config: set_config). */
static const char *last_name(PgQuery__Node **names, size_t n)
{
	if (!n || !names[n - 1] || names[n - 1]->node_case != PG_QUERY__NODE__NODE_STRING ||
	    !names[n - 1]->string)
		return "";
	return names[n - 1]->string->sval;
}

/* UPDATE/INSERT/DELETE/MERGE on pg_settings: its rules call set_config. */
static int settings_target(const PgQuery__RangeVar *rv)
{
	return rv && rv->relname && strcasecmp(rv->relname, "pg_settings") == 0;
}

/* Session state that a node anywhere in a statement leaves behind: SQL_*
 * flags. */
static unsigned node_session(const ProtobufCMessage *m)
{
	const ProtobufCMessageDescriptor *d = m->descriptor;
	int rel = 0;

	if (d == &pg_query__func_call__descriptor) {
		const PgQuery__FuncCall *f = (const void *)m;

		return session_function(last_name(f->funcname, f->n_funcname));
	}
	if (d == &pg_query__range_var__descriptor) {
		const PgQuery__RangeVar *rv = (const void *)m;

		rel = (rv->relpersistence && rv->relpersistence[0] == 't') ||
		      (rv->schemaname && temp_schema(rv->schemaname));
	} else if (d == &pg_query__string__descriptor) {
		/* a name in a qualified name list: CREATE FUNCTION pg_temp.f, types */
		rel = temp_schema(((const PgQuery__String *)(const void *)m)->sval);
	} else if (d == &pg_query__update_stmt__descriptor) {
		rel = settings_target(((const PgQuery__UpdateStmt *)(const void *)m)->relation);
	} else if (d == &pg_query__insert_stmt__descriptor) {
		rel = settings_target(((const PgQuery__InsertStmt *)(const void *)m)->relation);
	} else if (d == &pg_query__delete_stmt__descriptor) {
		rel = settings_target(((const PgQuery__DeleteStmt *)(const void *)m)->relation);
	} else if (d == &pg_query__merge_stmt__descriptor) {
		rel = settings_target(((const PgQuery__MergeStmt *)(const void *)m)->relation);
	}
	return rel ? SQL_SESSION : 0;
}

/* Every message below m, m included: their node_session flags into *fl;
 * -E2BIG when the tree is deeper than we walk. A constant's string is data,
 * not a name: constants are not entered. */
static int walk_session(const ProtobufCMessage *m, int depth, unsigned *fl)
{
	const ProtobufCMessageDescriptor *d;

	if (!m)
		return 0;
	if (depth > WALK_DEPTH_MAX)
		return -E2BIG;
	d = m->descriptor;
	if (d == &pg_query__a__const__descriptor)
		return 0;
	*fl |= node_session(m);
	for (unsigned i = 0; i < d->n_fields; i++) {
		const ProtobufCFieldDescriptor *f = &d->fields[i];
		const char *base = (const char *)m;
		int rc;

		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		/* a oneof member holds a value only when it is the case set */
		if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(const void *)(base + f->quantifier_offset) != f->id)
			continue;
		if (f->label == PROTOBUF_C_LABEL_REPEATED) {
			size_t n = *(const size_t *)(const void *)(base + f->quantifier_offset);
			ProtobufCMessage *const *v =
				*(ProtobufCMessage *const *const *)(const void *)(base + f->offset);

			for (size_t k = 0; k < n; k++)
				if ((rc = walk_session(v[k], depth + 1, fl)) != 0)
					return rc;
		} else {
			const ProtobufCMessage *sub =
				*(const ProtobufCMessage *const *)(const void *)(base + f->offset);

			if ((rc = walk_session(sub, depth + 1, fl)) != 0)
				return rc;
		}
	}
	return 0;
}

/* SQL_BEGIN (| SQL_BEGIN_PRIMARY) for a BEGIN or START TRANSACTION whose
 * modes PostgreSQL always accepts at the start of a transaction: each of
 * isolation level, read only/write and deferrable at most once (the
 * grammar admits only valid values). SERIALIZABLE and READ WRITE are
 * refused by a hot standby. Anything else: 0. */
static unsigned begin_flags(const PgQuery__TransactionStmt *t)
{
	unsigned fl = SQL_BEGIN, seen = 0;

	for (size_t i = 0; i < t->n_options; i++) {
		const PgQuery__Node *o = t->options[i];
		const PgQuery__DefElem *d;
		const PgQuery__AConst *c;
		unsigned bit;

		if (!o || o->node_case != PG_QUERY__NODE__NODE_DEF_ELEM)
			return 0;
		d = o->def_elem;
		if (!d->defname || !d->arg || d->arg->node_case != PG_QUERY__NODE__NODE_A_CONST)
			return 0;
		c = d->arg->a_const;
		if (strcmp(d->defname, "transaction_isolation") == 0) {
			if (c->val_case != PG_QUERY__A__CONST__VAL_SVAL || !c->sval->sval)
				return 0;
			if (strcmp(c->sval->sval, "serializable") == 0)
				fl |= SQL_BEGIN_PRIMARY;
			else if (strcmp(c->sval->sval, "repeatable read") != 0 &&
				 strcmp(c->sval->sval, "read committed") != 0 &&
				 strcmp(c->sval->sval, "read uncommitted") != 0)
				return 0;
			bit = 1;
		} else if (strcmp(d->defname, "transaction_read_only") == 0) {
			if (c->val_case != PG_QUERY__A__CONST__VAL_IVAL)
				return 0;
			if (!c->ival->ival)
				fl |= SQL_BEGIN_PRIMARY;
			bit = 2;
		} else if (strcmp(d->defname, "transaction_deferrable") == 0) {
			if (c->val_case != PG_QUERY__A__CONST__VAL_IVAL)
				return 0;
			bit = 4;
		} else {
			return 0;
		}
		if (seen & bit)
			return 0;
		seen |= bit;
	}
	return fl;
}

/* The SQL_* flags of one top-level statement; *walk_failed set when its
 * tree is too deep to walk. */
static unsigned stmt_flags(const PgQuery__Node *n, int *walk_failed)
{
	unsigned fl = SQL_ALL_OR_NOTHING;

	switch (n->node_case) {
	case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT: {
		const PgQuery__VariableSetStmt *s = n->variable_set_stmt;

		/* SET LOCAL, SET TRANSACTION [SNAPSHOT] end with the transaction */
		if (!s->is_local && strcmp(s->name, "TRANSACTION") != 0 &&
		    strcmp(s->name, "TRANSACTION SNAPSHOT") != 0)
			fl |= SQL_SESSION;
		break;
	}
	case PG_QUERY__NODE__NODE_PREPARE_STMT:
		fl = SQL_SESSION;
		break;
	case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
	case PG_QUERY__NODE__NODE_DISCARD_STMT:
	case PG_QUERY__NODE__NODE_LISTEN_STMT:
	case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
		fl |= SQL_SESSION | SQL_LISTEN;
		break;
	case PG_QUERY__NODE__NODE_LOAD_STMT:
		fl |= SQL_SESSION | SQL_UNCLEAN;	/* a library cannot be unloaded */
		break;
	case PG_QUERY__NODE__NODE_DO_STMT:
		fl = SQL_SESSION;	/* its body is not read */
		break;
	case PG_QUERY__NODE__NODE_CALL_STMT:
		fl = 0;
		break;
	case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
		if (n->declare_cursor_stmt->options & CURSOR_OPT_HOLD)
			fl |= SQL_SESSION;
		break;
	case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
		switch (n->transaction_stmt->kind) {
		case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
		case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
			fl = 0;
			break;
		case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
			fl = SQL_TXN_CONTROL | SQL_MAY_COMMIT |
			     (n->transaction_stmt->chain ? 0 : SQL_COMMIT);
			break;
		case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
			fl = SQL_TXN_CONTROL | begin_flags(n->transaction_stmt);
			break;
		case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
			fl = SQL_TXN_CONTROL | begin_flags(n->transaction_stmt);
			if (fl & SQL_BEGIN)
				fl |= SQL_START;
			break;
		case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
		case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT_PREPARED:
			fl = SQL_TXN_CONTROL | SQL_MAY_COMMIT;
			break;
		case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
			fl = SQL_TXN_CONTROL | (n->transaction_stmt->chain ? 0 : SQL_ROLLBACK);
			break;
		default:
			fl = SQL_TXN_CONTROL;
			break;
		}
		return fl;
	case PG_QUERY__NODE__NODE_VACUUM_STMT:
	case PG_QUERY__NODE__NODE_CLUSTER_STMT:
	case PG_QUERY__NODE__NODE_REINDEX_STMT:
		fl = 0;	/* may run one transaction per table */
		break;
	case PG_QUERY__NODE__NODE_INDEX_STMT:
		if (n->index_stmt->concurrent)
			fl = 0;
		break;
	case PG_QUERY__NODE__NODE_DROP_STMT:
		if (n->drop_stmt->concurrent)
			fl = 0;
		break;
	case PG_QUERY__NODE__NODE_SELECT_STMT:
	case PG_QUERY__NODE__NODE_INSERT_STMT:
	case PG_QUERY__NODE__NODE_UPDATE_STMT:
	case PG_QUERY__NODE__NODE_DELETE_STMT:
	case PG_QUERY__NODE__NODE_MERGE_STMT:
	case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
		fl |= SQL_PIPELINABLE;
		break;
	case PG_QUERY__NODE__NODE_COPY_STMT:
		fl |= SQL_COPY;
		break;
	default:
		break;
	}
	if (walk_session(&n->base, 0, &fl) < 0)
		*walk_failed = 1;
	return fl;
}

/* Parser refused the text (or its tree is too deep to walk): the worst. */
#define SQL_WORST (SQL_UNPARSED | SQL_SESSION | SQL_MAY_COMMIT)

static uint64_t nparses, nhits;
static int parser_used;	/* pg_query_exit crashes before the first parse */

/* The parse tree of sql (free with pg_query__parse_result__free_unpacked),
 * or NULL when the parser refuses it. */
static PgQuery__ParseResult *parse_tree(const char *sql)
{
	PgQueryProtobufParseResult pr;
	PgQuery__ParseResult *tree = NULL;

	parser_used = 1;
	pr = pg_query_parse_protobuf(sql);
	if (!pr.error)
		tree = pg_query__parse_result__unpack(NULL, pr.parse_tree.len,
						      (const uint8_t *)pr.parse_tree.data);
	pg_query_free_protobuf_parse_result(pr);
	return tree;
}

static unsigned parse_flags(const char *sql)
{
	PgQuery__ParseResult *tree;
	unsigned fl = SQL_ALL_OR_NOTHING | SQL_PIPELINABLE;
	int walk_failed = 0;

	nparses++;
	tree = parse_tree(sql);
	if (!tree)
		return SQL_WORST;
	if (tree->n_stmts != 1)
		fl &= ~(SQL_PIPELINABLE | (tree->n_stmts ? SQL_ALL_OR_NOTHING : 0u));
	for (size_t i = 0; i < tree->n_stmts; i++) {
		const PgQuery__RawStmt *rs = tree->stmts[i];
		unsigned s;

		if (!rs || !rs->stmt) {
			walk_failed = 1;
			break;
		}
		s = stmt_flags(rs->stmt, &walk_failed);
		fl |= s & (SQL_SESSION | SQL_UNCLEAN | SQL_TXN_CONTROL | SQL_MAY_COMMIT |
			   (tree->n_stmts == 1 ? SQL_ROLLBACK | SQL_COMMIT | SQL_BEGIN |
			    SQL_BEGIN_PRIMARY | SQL_START | SQL_LISTEN : 0u));
		if (tree->n_stmts == 1 && !(s & SQL_COPY))
			fl |= SQL_SINGLE;
		fl &= s | ~(SQL_ALL_OR_NOTHING | SQL_PIPELINABLE);
	}
	pg_query__parse_result__free_unpacked(tree, NULL);
	if (walk_failed)
		return SQL_WORST;
	if (fl & SQL_SESSION)
		fl &= ~SQL_PIPELINABLE;
	return fl;
}

/* The cache: CLASS_SETS sets of CLASS_WAYS entries; a full set drops its
 * least recently used entry. */
struct class_entry {
	uint64_t hash;
	char *sql;              /* NULL: empty */
	uint32_t len;
	uint32_t used;          /* tick of the last hit, for LRU within the set */
	unsigned flags;
};

static struct class_entry cache[CLASS_SETS][CLASS_WAYS];
static uint32_t tick, nentries;
static uint64_t nbytes;

static void entry_drop(struct class_entry *e)
{
	if (!e->sql)
		return;
	nbytes -= e->len + 1u;
	nentries--;
	free(e->sql);
	e->sql = NULL;
}

unsigned sql_classify(const char *sql)
{
	size_t len = strlen(sql);
	uint64_t h;
	struct class_entry *set, *victim;
	unsigned fl;

	if (len > CLASS_TEXT_MAX)
		return parse_flags(sql);
	h = stmt_hash(sql, 0);
	set = cache[(h >> 7) & (CLASS_SETS - 1)];
	victim = &set[0];
	for (int w = 0; w < CLASS_WAYS; w++) {
		struct class_entry *e = &set[w];

		if (e->sql && e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
			e->used = ++tick;
			nhits++;
			return e->flags;
		}
		if (!e->sql)
			victim = e;
		else if (victim->sql && e->used < victim->used)
			victim = e;
	}
	fl = parse_flags(sql);
	entry_drop(victim);
	if (nbytes + len + 1 > CLASS_BYTES_MAX)
		return fl;
	victim->sql = malloc(len + 1);
	if (!victim->sql)
		return fl;
	memcpy(victim->sql, sql, len + 1);
	victim->hash = h;
	victim->len = (uint32_t)len;
	victim->used = ++tick;
	victim->flags = fl;
	nentries++;
	nbytes += len + 1;
	return fl;
}

int sql_changes_session(const char *sql)
{
	return (sql_classify(sql) & SQL_SESSION) != 0;
}

int sql_all_or_nothing(const char *sql)
{
	return (sql_classify(sql) & SQL_ALL_OR_NOTHING) != 0;
}

int sql_may_commit(const char *sql)
{
	return (sql_classify(sql) & SQL_MAY_COMMIT) != 0;
}

int sql_txn_control(const char *sql)
{
	return (sql_classify(sql) & SQL_TXN_CONTROL) != 0;
}

int sql_pipelinable(const char *sql)
{
	return (sql_classify(sql) & SQL_PIPELINABLE) != 0;
}

int sql_is_rollback(const char *sql)
{
	return (sql_classify(sql) & SQL_ROLLBACK) != 0;
}

int sql_is_commit(const char *sql)
{
	return (sql_classify(sql) & SQL_COMMIT) != 0;
}

/* PostgreSQL cuts an identifier to NAMEDATALEN - 1 bytes, at a character
 * boundary (UTF-8 here). */
static void name_cut(char *dst, size_t n, const char *src)
{
	size_t len = strlen(src);

	if (len > 63) {
		len = 63;
		while (len > 0 && ((unsigned char)src[len] & 0xc0) == 0x80)
			len--;
	}
	if (len >= n)
		len = n - 1;
	memcpy(dst, src, len);
	dst[len] = '\0';
}

enum sql_listen_kind sql_listen(const char *sql, char *chan, size_t n)
{
	PgQuery__ParseResult *tree;
	enum sql_listen_kind kind = SQL_LISTEN_NONE;
	const PgQuery__Node *st;

	*chan = '\0';
	if (!(sql_classify(sql) & SQL_LISTEN) || n < 64)
		return SQL_LISTEN_NONE;
	tree = parse_tree(sql);
	if (!tree)
		return SQL_LISTEN_NONE;
	st = tree->n_stmts == 1 && tree->stmts[0] ? tree->stmts[0]->stmt : NULL;
	if (st && st->node_case == PG_QUERY__NODE__NODE_LISTEN_STMT &&
	    st->listen_stmt->conditionname && *st->listen_stmt->conditionname) {
		kind = SQL_LISTEN_ON;
		name_cut(chan, n, st->listen_stmt->conditionname);
	} else if (st && st->node_case == PG_QUERY__NODE__NODE_UNLISTEN_STMT) {
		/* UNLISTEN *: no name (protobuf's empty string) */
		const char *c = st->unlisten_stmt->conditionname;

		kind = c && *c ? SQL_UNLISTEN : SQL_UNLISTEN_ALL;
		if (c && *c)
			name_cut(chan, n, c);
	}
	pg_query__parse_result__free_unpacked(tree, NULL);
	return kind;
}

void sql_class_stats(struct sql_class_stats *st)
{
	st->parses = nparses;
	st->hits = nhits;
	st->entries = nentries;
	st->bytes = nbytes;
}

void sql_class_reset(void)
{
	for (int s = 0; s < CLASS_SETS; s++)
		for (int w = 0; w < CLASS_WAYS; w++)
			entry_drop(&cache[s][w]);
	tick = 0;
	nparses = nhits = 0;
}

void sql_class_exit(void)
{
	sql_class_reset();
	if (parser_used)
		pg_query_exit();
	parser_used = 0;
}
