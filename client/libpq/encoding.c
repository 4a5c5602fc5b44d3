/* PostgreSQL's encodings, as libpq exports them: names and numbers
 * (pg_wchar.h's order), character lengths and display widths. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "face.h"

enum { ENC_SQL_ASCII = 0, ENC_EUC_JP, ENC_EUC_CN, ENC_EUC_KR, ENC_EUC_TW, ENC_EUC_JIS_2004,
       ENC_UTF8, ENC_MULE, ENC_LAST_SERVER = 34, ENC_SJIS = 35, ENC_BIG5, ENC_GBK, ENC_UHC,
       ENC_GB18030, ENC_JOHAB, ENC_SHIFT_JIS_2004, ENC_COUNT };

static const char *const names[ENC_COUNT] = {
	"SQL_ASCII", "EUC_JP", "EUC_CN", "EUC_KR", "EUC_TW", "EUC_JIS_2004", "UTF8",
	"MULE_INTERNAL", "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6", "LATIN7",
	"LATIN8", "LATIN9", "LATIN10", "WIN1256", "WIN1258", "WIN866", "WIN874", "KOI8R",
	"WIN1251", "WIN1252", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7", "ISO_8859_8", "WIN1250",
	"WIN1253", "WIN1254", "WIN1255", "WIN1257", "KOI8U", "SJIS", "BIG5", "GBK", "UHC",
	"GB18030", "JOHAB", "SHIFT_JIS_2004",
};

/* Aliases beyond the names themselves (compared without case and
 * punctuation, as PostgreSQL's clean_encoding_name does). */
static const struct { const char *alias; int id; } aliases[] = {
	{ "unicode", ENC_UTF8 }, { "utf8", ENC_UTF8 }, { "mskanji", ENC_SJIS },
	{ "shiftjis", ENC_SJIS }, { "windows932", ENC_SJIS }, { "windows936", ENC_GBK },
	{ "windows949", ENC_UHC }, { "windows950", ENC_BIG5 }, { "iso88591", 8 },
	{ "iso88592", 9 }, { "iso88593", 10 }, { "iso88594", 11 }, { "iso88599", 12 },
	{ "iso885910", 13 }, { "iso885913", 14 }, { "iso885914", 15 }, { "iso885915", 16 },
	{ "iso885916", 17 }, { "koi8", 22 }, { "alt", 20 }, { "windows1252", 24 },
	{ "windows1251", 23 }, { "windows1250", 29 }, { "tcvn", 19 }, { "vscii", 19 },
};

static void clean(const char *in, char *out, size_t n)
{
	size_t j = 0;

	for (; *in && j + 1 < n; in++)
		if (isalnum((unsigned char)*in))
			out[j++] = (char)tolower((unsigned char)*in);
	out[j] = '\0';
}

int face_encoding_id(const char *name)
{
	char want[64], have[64];

	if (!name)
		return -1;
	clean(name, want, sizeof(want));
	for (int i = 0; i < ENC_COUNT; i++) {
		clean(names[i], have, sizeof(have));
		if (strcmp(want, have) == 0)
			return i;
	}
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		if (strcmp(want, aliases[i].alias) == 0)
			return aliases[i].id;
	return -1;
}

const char *face_encoding_name(int id)
{
	return id >= 0 && id < ENC_COUNT ? names[id] : "";
}

FACE_API int pg_char_to_encoding(const char *name)
{
	return face_encoding_id(name);
}

FACE_API const char *pg_encoding_to_char(int encoding)
{
	return face_encoding_name(encoding);
}

FACE_API int pg_valid_server_encoding_id(int encoding)
{
	return encoding >= 0 && encoding <= ENC_LAST_SERVER;
}

FACE_API int pg_valid_server_encoding(const char *name)
{
	int id = face_encoding_id(name);

	return pg_valid_server_encoding_id(id) ? id : -1;
}

FACE_API int PQenv2encoding(void)
{
	const char *s = getenv("PGCLIENTENCODING");
	int id = s && *s ? face_encoding_id(s) : -1;

	return id < 0 ? ENC_SQL_ASCII : id;
}

FACE_API int pg_utf_mblen(const unsigned char *s)
{
	if ((*s & 0x80) == 0)
		return 1;
	if ((*s & 0xe0) == 0xc0)
		return 2;
	if ((*s & 0xf0) == 0xe0)
		return 3;
	if ((*s & 0xf8) == 0xf0)
		return 4;
	return 1;
}

FACE_API int PQmblen(const char *s, int encoding)
{
	const unsigned char *u = (const unsigned char *)s;

	if (*u < 0x80)
		return 1;
	switch (encoding) {
	case ENC_UTF8:
		return pg_utf_mblen(u);
	case ENC_EUC_JP:
	case ENC_EUC_JIS_2004:
		return *u == 0x8f ? 3 : 2;
	case ENC_EUC_TW:
		return *u == 0x8e ? 4 : 2;
	case ENC_EUC_CN:
	case ENC_EUC_KR:
	case ENC_BIG5:
	case ENC_GBK:
	case ENC_UHC:
	case ENC_JOHAB:
		return 2;
	case ENC_GB18030:
		return u[1] >= 0x30 && u[1] <= 0x39 ? 4 : 2;
	case ENC_SJIS:
	case ENC_SHIFT_JIS_2004:
		return *u >= 0xa1 && *u <= 0xdf ? 1 : 2;
	case ENC_MULE:
		if (*u >= 0x81 && *u <= 0x8d)
			return 2;
		if (*u == 0x9a || *u == 0x9b || (*u >= 0x90 && *u <= 0x99))
			return 3;
		if (*u == 0x9c || *u == 0x9d)
			return 4;
		return 1;
	default:
		return 1;
	}
}

FACE_API int PQmblenBounded(const char *s, int encoding)
{
	int len = PQmblen(s, encoding);

	return (int)strnlen(s, (size_t)len);
}

/* East Asian wide and combining characters, coarsely (libpq's
 * ucs_wcwidth has the full tables). */
static int ucs_width(unsigned cp)
{
	if (cp == 0)
		return 0;
	if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0))
		return -1;
	if ((cp >= 0x0300 && cp <= 0x036f) || (cp >= 0x200b && cp <= 0x200f) ||
	    (cp >= 0xfe00 && cp <= 0xfe0f) || (cp >= 0x20d0 && cp <= 0x20ff))
		return 0;
	if ((cp >= 0x1100 && cp <= 0x115f) || (cp >= 0x2e80 && cp <= 0xa4cf && cp != 0x303f) ||
	    (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) ||
	    (cp >= 0xfe30 && cp <= 0xfe6f) || (cp >= 0xff00 && cp <= 0xff5f) ||
	    (cp >= 0xffe0 && cp <= 0xffe6) || (cp >= 0x1f300 && cp <= 0x1f64f) ||
	    (cp >= 0x1f900 && cp <= 0x1f9ff) || (cp >= 0x20000 && cp <= 0x3fffd))
		return 2;
	return 1;
}

FACE_API int PQdsplen(const char *s, int encoding)
{
	const unsigned char *u = (const unsigned char *)s;
	unsigned cp;
	int len;

	if (*u < 0x80)
		return ucs_width(*u);
	if (encoding != ENC_UTF8)
		return PQmblen(s, encoding) > 1 ? 2 : 1;
	len = pg_utf_mblen(u);
	if (len == 2)
		cp = (u[0] & 0x1fu) << 6 | (u[1] & 0x3fu);
	else if (len == 3)
		cp = (u[0] & 0x0fu) << 12 | (u[1] & 0x3fu) << 6 | (u[2] & 0x3fu);
	else if (len == 4)
		cp = (u[0] & 0x07u) << 18 | (u[1] & 0x3fu) << 12 | (u[2] & 0x3fu) << 6 |
		     (u[3] & 0x3fu);
	else
		return 1;
	return ucs_width(cp);
}
