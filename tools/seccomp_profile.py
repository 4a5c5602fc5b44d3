#!/usr/bin/env python3
"""Run a program under a seccomp profile in Docker's JSON format.

    python3 tools/seccomp_profile.py PROFILE.json PROGRAM [ARGS...]

The profile's defaultAction (SCMP_ACT_ERRNO with defaultErrnoRet, or
SCMP_ACT_ALLOW) and its syscalls[] rules of action SCMP_ACT_ALLOW without
args are loaded with libseccomp (through ctypes), then PROGRAM is executed
under them, as `docker run --security-opt seccomp=PROFILE.json` would run
it. Names this architecture does not have are skipped, as Docker does.
tests/integ/test_loop.c runs the broker this way under
etc/seccomp-pgbroker.json. Exit status 2 when the profile cannot be loaded.
"""
import ctypes
import ctypes.util
import json
import os
import sys

SCMP_ACT_ALLOW = 0x7FFF0000


def scmp_act_errno(err):
    return 0x00050000 | (err & 0x0000FFFF)


def fail(msg):
    sys.stderr.write("seccomp_profile.py: %s\n" % msg)
    sys.exit(2)


def main():
    if len(sys.argv) < 3:
        fail("usage: seccomp_profile.py PROFILE.json PROGRAM [ARGS...]")
    with open(sys.argv[1]) as f:
        prof = json.load(f)
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        fail("libseccomp not found (apt-get install libseccomp2): %s" % e)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.restype = ctypes.c_int
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                     ctypes.c_uint]
    lib.seccomp_load.restype = ctypes.c_int
    lib.seccomp_load.argtypes = [ctypes.c_void_p]

    default = prof.get("defaultAction")
    if default == "SCMP_ACT_ERRNO":
        act = scmp_act_errno(int(prof.get("defaultErrnoRet", 1)))
    elif default == "SCMP_ACT_ALLOW":
        act = SCMP_ACT_ALLOW
    else:
        fail("defaultAction %r is not supported here" % default)
    ctx = lib.seccomp_init(act)
    if not ctx:
        fail("seccomp_init failed")
    for rule in prof.get("syscalls", []):
        if rule.get("action") != "SCMP_ACT_ALLOW" or rule.get("args"):
            fail("only SCMP_ACT_ALLOW rules without args are supported: %r" % rule)
        for sc in rule["names"]:
            nr = lib.seccomp_syscall_resolve_name(sc.encode())
            if nr < 0:
                continue
            rc = lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)
            if rc < 0:
                fail("seccomp_rule_add %s: %s" % (sc, os.strerror(-rc)))
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        fail("seccomp_load: %s" % os.strerror(-rc))
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        sys.stderr.write("seccomp_profile.py: cannot run %s: %s\n" % (sys.argv[2], e))
        sys.exit(127)


if __name__ == "__main__":
    main()
