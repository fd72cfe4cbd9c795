"""Real servers that the integration tests (tests/integration) and the
benchmarks (tests/bench/bench.py) both start, set up one way: a private
PostgreSQL (initdb and pg_ctl in a temporary directory; PostgreSQL refuses to
run as root, so under root the server runs as an unprivileged system user,
created if missing) and nginx's configuration. Plain Python, no pytest: the
benchmarks import it too."""
import glob
import os
import pwd
import subprocess

PG_USER = "ddshimpg"
PG_SUPERUSER = "postgres"


def pg_bindir():
    """Where initdb and pg_ctl are (Debian keeps them out of PATH)."""
    for cand in ["/usr/lib/postgresql/15/bin"] + sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                                        reverse=True):
        if os.path.exists(os.path.join(cand, "initdb")):
            return cand
    try:
        return subprocess.check_output(["pg_config", "--bindir"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")


class PgCluster:
    """initdb into directory/data and start it: unix socket in directory,
    port, durability off, plus `settings` (a list of "-c name=value" strings).
    Server commands run through self.prefix (runuser as PG_USER under root)."""

    def __init__(self, directory, port, settings, logfile):
        self.bindir = pg_bindir()
        self.dir = directory
        self.data = os.path.join(directory, "data")
        self.logfile = logfile
        self.port = port
        self.prefix = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                subprocess.run(["useradd", "-r", "-M", "-d", "/nonexistent", "-s",
                                "/usr/sbin/nologin", PG_USER], check=True)
            pw = pwd.getpwnam(PG_USER)
            os.chown(directory, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", PG_USER, "--"]
        os.chmod(directory, 0o755)
        self.as_server([os.path.join(self.bindir, "initdb"), "-D", self.data, "--no-sync",
                        "-A", "trust", "-U", PG_SUPERUSER, "-E", "UTF8", "--locale=C"])
        opts = " ".join(["-p %d" % port, "-c unix_socket_directories=%s" % directory,
                         "-c fsync=off", "-c synchronous_commit=off",
                         "-c full_page_writes=off"] + list(settings))
        self.as_server([os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-l", logfile,
                        "-o", opts, "-w", "-t", "60", "start"])

    def as_server(self, cmd):
        r = subprocess.run(self.prefix + cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log = open(self.logfile).read() if os.path.exists(self.logfile) else ""
            raise RuntimeError("%s failed (%d): %s %s\n%s" % (cmd[0], r.returncode, r.stdout,
                                                              r.stderr, log))
        return r

    def stop(self):
        subprocess.run(self.prefix + [os.path.join(self.bindir, "pg_ctl"), "-D", self.data,
                                      "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)


NGINX_CONF = """
daemon off;
{user}
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    keepalive_requests {keepalive};
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
    }}
}}
"""


def nginx_conf(d, port, workers, keepalive_requests):
    """nginx serving d/www on 127.0.0.1:port, in the foreground, no access log;
    as root its workers run as root too (they read files made by the tests)."""
    return NGINX_CONF.format(d=d, port=port, workers=workers, keepalive=keepalive_requests,
                             user="user root;" if os.geteuid() == 0 else "")
