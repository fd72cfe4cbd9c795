"""The shim exports its hooks and nothing else: msgpack-c, PCRE2 and every
internal function stay hidden, so they can never clash with the host
program's own symbols."""
import re
import subprocess

from conftest import LIB

HOOK = re.compile(r"^(PQ\w+|redis\w+|__(read|recv|recvfrom)_chk|accept4?|connect|"
                  r"send(to|msg|mmsg|file|file64)?|"
                  r"recv(from|msg)?|write(v)?|read(v)?|close(_range|from)?|shutdown|dup[23]?|_exit|_Exit|"
                  r"execv(e|p|pe)?|splice|"
                  # a second way to write to a tracked socket: marked for the wire check
                  r"fdopen|fcntl|fcntl64|"
                  # hooks/signal.c: marks the program's own signal handlers while they run
                  r"sigaction|signal|bsd_signal|sysv_signal|sigset|siglongjmp|longjmp|__longjmp_chk)$")


def defined_dynamic_symbols():
    out = subprocess.run(["nm", "-D", "--defined-only", LIB], capture_output=True, text=True, check=True)
    names = [l.split()[-1] for l in out.stdout.splitlines() if l.strip()]
    return [n.split("@")[0] for n in names]


def test_only_hooks_are_exported():
    names = defined_dynamic_symbols()
    assert "write" in names and "connect" in names and "recv" in names
    extra = [n for n in names if not HOOK.match(n)]
    assert extra == [], extra


def test_no_internal_or_bundled_symbols():
    names = set(defined_dynamic_symbols())
    for prefix in ("dds_", "msgpack_", "pcre2_", "json_"):
        assert not [n for n in names if n.startswith(prefix)], prefix


def test_no_libcurl_or_openssl_dependency():
    out = subprocess.run(["ldd", LIB], capture_output=True, text=True, check=True).stdout
    assert "libcurl" not in out and "libssl" not in out and "libcrypto" not in out, out
