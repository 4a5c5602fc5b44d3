/* The release number, set by the Makefile (VERSION_MAJOR/MINOR/PATCH). */
#ifndef PGB_VERSION_H
#define PGB_VERSION_H

#ifndef PGB_VERSION_MAJOR
#define PGB_VERSION_MAJOR 0
#define PGB_VERSION_MINOR 0
#define PGB_VERSION_PATCH 0
#endif

#define PGB_STR_(x) #x
#define PGB_STR(x) PGB_STR_(x)
#define PGB_VERSION PGB_STR(PGB_VERSION_MAJOR) "." PGB_STR(PGB_VERSION_MINOR) "." \
	PGB_STR(PGB_VERSION_PATCH)

#endif
