/* Session-state scan; see sqlscan.h. Skips comments, string literals,
 * quoted identifiers and dollar quotes; looks at words only. */
#include "sqlscan.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static int is_word(int c)
{
	return isalnum(c) || c == '_';
}

/* Advance past one dollar-quoted string starting at s ("$tag$...$tag$"). */
static const char *skip_dollar(const char *s)
{
	const char *end = s + 1;
	size_t taglen;

	while (*end && (is_word((unsigned char)*end)) && *end != '$')
		end++;
	if (*end != '$')
		return s + 1;
	taglen = (size_t)(end - s) + 1;
	for (const char *p = end + 1; *p; p++)
		if (*p == '$' && strncmp(p, s, taglen) == 0)
			return p + taglen;
	return s + strlen(s);
}

static int word_is(const char *w, size_t n, const char *kw)
{
	return strlen(kw) == n && strncasecmp(w, kw, n) == 0;
}

/* pg_temp or pg_temp_<n>: the session's own schema for temporary objects. */
static int temp_schema(const char *w, size_t n)
{
	if (n < 7 || strncasecmp(w, "pg_temp", 7) != 0)
		return 0;
	if (n == 7)
		return 1;
	if (n == 8 || w[7] != '_')
		return 0;
	for (size_t i = 8; i < n; i++)
		if (!isdigit((unsigned char)w[i]))
			return 0;
	return 1;
}

/* Functions and schemas whose use leaves session state behind. */
static int session_name(const char *w, size_t n)
{
	return word_is(w, n, "set_config") || word_is(w, n, "pg_advisory_lock") ||
	       word_is(w, n, "pg_advisory_lock_shared") || word_is(w, n, "pg_try_advisory_lock") ||
	       word_is(w, n, "pg_try_advisory_lock_shared") || word_is(w, n, "dblink_connect") ||
	       word_is(w, n, "dblink_connect_u") || temp_schema(w, n);
}

/* An E'' string: a backslash escapes the next character, a quote too. */
static int escape_string(const char *sql, const char *q)
{
	return q > sql && (q[-1] == 'E' || q[-1] == 'e') &&
	       (q - 1 == sql || !is_word((unsigned char)q[-2]));
}

/* Past the comment, string, quoted identifier or dollar quote that starts
 * at p, or p itself when none does. backslash: a backslash escapes in every
 * '' string, as with standard_conforming_strings off. */
static const char *skip_literal(const char *sql, const char *p, int backslash)
{
	unsigned char c = (unsigned char)*p;

	if (c == '-' && p[1] == '-') {
		while (*p && *p != '\n')
			p++;
	} else if (c == '/' && p[1] == '*') {
		int depth = 1;

		for (p += 2; *p && depth; p++) {
			if (*p == '/' && p[1] == '*')
				depth++, p++;
			else if (*p == '*' && p[1] == '/')
				depth--, p++;
		}
	} else if (c == '\'' || c == '"') {
		int bs = c == '\'' && (backslash || escape_string(sql, p));

		for (p++; *p; p++)
			if (bs && *p == '\\' && p[1])
				p++;
			else if (*p == (char)c) {
				if (p[1] == (char)c)
					p++;
				else
					break;
			}
		if (*p)
			p++;
	} else if (c == '$' && (p == sql || !is_word((unsigned char)p[-1]))) {
		p = skip_dollar(p);
	}
	return p;
}

/* One scan; backslash as for skip_literal. */
static int scan_session(const char *sql, int backslash)
{
	const char *p = sql;
	const char *prev = NULL;      /* previous word in this statement */
	size_t prevn = 0;
	int first = 1;                /* next word starts a statement */
	int set_stmt = 0;             /* statement began with SET */

	while (*p) {
		unsigned char c = (unsigned char)*p;
		const char *past = skip_literal(sql, p, backslash);

		if (past != p) {
			/* "set_config"(...) or "pg_temp".t name what they name
			 * unquoted: look inside a quoted identifier */
			if (c == '"' && past - p >= 2 && past[-1] == '"' &&
			    session_name(p + 1, (size_t)(past - p) - 2))
				return 1;
			p = past;
		} else if (c == ';') {
			first = 1;
			set_stmt = 0;
			prev = NULL;
			p++;
		} else if (is_word(c)) {
			const char *w = p;
			size_t n;

			while (is_word((unsigned char)*p))
				p++;
			n = (size_t)(p - w);
			if (first) {
				first = 0;
				if (word_is(w, n, "set"))
					set_stmt = 1;
				else if (word_is(w, n, "prepare") || word_is(w, n, "listen") ||
					 word_is(w, n, "load") || word_is(w, n, "deallocate") ||
					 word_is(w, n, "discard") || word_is(w, n, "do"))
					return 1;
			} else if (set_stmt && prev && word_is(prev, prevn, "set")) {
				/* SET LOCAL / TRANSACTION / CONSTRAINTS end with the transaction */
				if (!word_is(w, n, "local") && !word_is(w, n, "transaction") &&
				    !word_is(w, n, "constraints"))
					return 1;
			}
			if (word_is(w, n, "temp") || word_is(w, n, "temporary") ||
			    word_is(w, n, "hold") || session_name(w, n))
				return 1;
			prev = w;
			prevn = n;
		} else {
			p++;
		}
	}
	/* a lone SET with nothing after it is a syntax error: harmless */
	return 0;
}

/* Whether a backslash ends a '' string depends on the session
 * (standard_conforming_strings), so a text is read both ways; without a
 * backslash the two readings are the same and one scan does. */
static int two_readings(const char *sql)
{
	return strchr(sql, '\\') != NULL;
}

/* A SET that either reading finds counts. */
int sql_changes_session(const char *sql)
{
	return scan_session(sql, 0) || (two_readings(sql) && scan_session(sql, 1));
}

/* One scan; backslash as for skip_literal. 1 when a statement of the text
 * begins with one of the n words; *stmts: how many statements it holds. */
static int first_words(const char *sql, int backslash, const char *const *words, size_t n,
		       int *stmts)
{
	const char *p = sql;
	int first = 1;

	*stmts = 0;
	while (*p) {
		const char *past = skip_literal(sql, p, backslash);

		if (past != p) {
			p = past;
		} else if (*p == ';') {
			first = 1;
			p++;
		} else if (is_word((unsigned char)*p)) {
			const char *w = p;

			while (is_word((unsigned char)*p))
				p++;
			if (!first)
				continue;
			first = 0;
			(*stmts)++;
			for (size_t i = 0; i < n; i++)
				if (word_is(w, (size_t)(p - w), words[i]))
					return 1;
		} else {
			p++;
		}
	}
	return 0;
}

/* first_words under either reading; *stmts: the most statements either
 * found. */
static int first_words_either(const char *sql, const char *const *words, size_t n, int *stmts)
{
	int more = 0;

	if (first_words(sql, 0, words, n, stmts))
		return 1;
	if (!two_readings(sql))
		return 0;
	if (first_words(sql, 1, words, n, &more))
		return 1;
	if (more > *stmts)
		*stmts = more;
	return 0;
}

int sql_all_or_nothing(const char *sql)
{
	static const char *const parts[] = {
		"call", "do", "begin", "start", "commit", "end", "rollback", "abort",
		"savepoint", "release", "prepare",
	};
	int stmts;

	return !first_words_either(sql, parts, sizeof(parts) / sizeof(parts[0]), &stmts) &&
	       stmts <= 1;
}

int sql_may_commit(const char *sql)
{
	static const char *const ends[] = { "commit", "end", "prepare" };
	int stmts;

	return first_words_either(sql, ends, sizeof(ends) / sizeof(ends[0]), &stmts);
}

int sql_txn_control(const char *sql)
{
	static const char *const words[] = { "begin", "start", "commit", "end", "rollback",
					     "abort" };
	int stmts;

	return first_words_either(sql, words, sizeof(words) / sizeof(words[0]), &stmts);
}

int sql_pipelinable(const char *sql)
{
	static const char *const ok[] = { "select", "insert", "update", "delete", "with",
					  "values", "table", "show" };
	const char *p = sql;
	size_t n;
	int good = 0;

	while (*p && (isspace((unsigned char)*p) || *p == '('))
		p++;
	for (n = 0; is_word((unsigned char)p[n]); n++)
		;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (word_is(p, n, ok[i]))
			good = 1;
	if (!good)
		return 0;
	/* A ';' outside literals and comments, with more after it, is a
	 * second statement (the extended protocol refuses those). */
	for (; *p; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				p++;
			if (!*p)
				break;
		} else if (c == '/' && p[1] == '*') {
			return 0;   /* rare in hot statements: stay safe */
		} else if (c == '\'' || c == '"') {
			for (p++; *p && *p != (char)c; p++)
				;
			if (!*p)
				return 0;
		} else if (c == '$' && isdigit((unsigned char)p[1])) {
			p++;	/* a parameter, $1 */
		} else if (c == '$') {
			return 0;	/* maybe dollar quoting: stay safe */
		} else if (c == ';') {
			for (p++; *p; p++)
				if (!isspace((unsigned char)*p) && *p != ';')
					return 0;
			return 1;
		}
	}
	return 1;
}
