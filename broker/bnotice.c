/* Notices kept per backend and attached to the next result (bnotice.h).
 * Each notice is packed as its error fields (resp_diag_pack) and an empty
 * field; a result's notices are at most BNOTICE_MAX bytes, the rest
 * dropped (and counted in the log). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-events.h>

#include "bnotice.h"
#include "log.h"
#include "proto.h"

#define BNOTICE_MAX (64u * 1024u)

struct bnotice {
	char *buf;       /* packed notices since the last result */
	uint32_t len, cap;
	uint32_t dropped;
};

/* The fields a notice keeps (libpq's PG_DIAG_* letters). */
static const char notice_codes[] = "SVCMDHWPpqstcdn";

static const char *notice_field(void *ctx, int code)
{
	return PQresultErrorField(ctx, code);
}

static void notice_keep(void *arg, const PGresult *res)
{
	struct bnotice *n = arg;
	uint32_t need = resp_diag_pack(NULL, 0, notice_codes, notice_field, (void *)res) + 1;

	log_debug("backend notice: %s", PQresultErrorMessage(res));
	if (n->len + need > BNOTICE_MAX) {
		n->dropped++;
		return;
	}
	if (n->len + need > n->cap) {
		uint32_t cap = n->cap ? n->cap : 256;
		char *b;

		while (cap < n->len + need)
			cap *= 2;
		b = realloc(n->buf, cap);
		if (!b) {
			n->dropped++;
			return;
		}
		n->buf = b;
		n->cap = cap;
	}
	resp_diag_pack(n->buf + n->len, need, notice_codes, notice_field, (void *)res);
	n->len += need;
	n->buf[n->len - 1] = '\0';	/* the empty field that ends this notice */
}

/* A result's notices: its instance data. */
struct bnotice_res {
	uint32_t len;
	char data[];
};

static int bnotice_event(PGEventId id, void *info, void *pass)
{
	struct bnotice *n = pass;

	switch (id) {
	case PGEVT_RESULTCREATE: {
		PGEventResultCreate *e = info;
		struct bnotice_res *r;

		if (n->dropped) {
			log_warn("%u notices dropped: over %u bytes before one result", n->dropped,
				 BNOTICE_MAX);
			n->dropped = 0;
		}
		if (!n->len)
			return 1;
		r = malloc(sizeof(*r) + n->len);
		if (r) {
			r->len = n->len;
			memcpy(r->data, n->buf, n->len);
			if (!PQresultSetInstanceData(e->result, bnotice_event, r))
				free(r);
		}
		n->len = 0;
		return 1;
	}
	case PGEVT_RESULTDESTROY: {
		PGEventResultDestroy *e = info;

		free(PQresultInstanceData(e->result, bnotice_event));
		return 1;
	}
	case PGEVT_CONNRESET:
		n->len = 0;
		return 1;
	case PGEVT_CONNDESTROY:
		free(n->buf);
		free(n);
		return 1;
	default:
		return 1;
	}
}

int bnotice_attach(PGconn *pg)
{
	struct bnotice *n = calloc(1, sizeof(*n));

	if (!n)
		return -ENOMEM;
	if (!PQregisterEventProc(pg, bnotice_event, "pgbroker notices", n)) {
		free(n);
		return -ENOMEM;
	}
	PQsetNoticeReceiver(pg, notice_keep, n);
	return 0;
}

const char *bnotice_of(const PGresult *res, uint32_t *len)
{
	struct bnotice_res *r = res ? PQresultInstanceData(res, bnotice_event) : NULL;

	*len = r ? r->len : 0;
	return r ? r->data : NULL;
}
