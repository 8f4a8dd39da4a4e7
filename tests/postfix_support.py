"""A private Postfix instance for the tests and the Postfix benchmark.

Its own configuration, queue and log under a directory the caller gives (pytest's
tmp_path), its own data directory (see `PostfixInstance.__post_init__`), listening on
loopback ports only, never port 25, and sending only to what `relayhost` names
(a test sink on 127.0.0.1). Started with `postfix -c DIR start`, stopped with
`postfix -c DIR stop`; any of its processes still alive after that is killed by id.

The deployment snippets in deploy/postfix/ are appended to a minimal base
configuration with their ports replaced (`dlp_snippets`), so what is tested is what
ships.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SNIPPETS = REPO / "deploy" / "postfix"

# Ports as the shipped snippets write them; replaced by free loopback ports.
SNIPPET_LMTP = "[127.0.0.1]:10024"
SNIPPET_RELAY = "127.0.0.1:10026"
SNIPPET_SECURE = "127.0.0.1:10027"


def postfix_missing() -> str | None:
    """Why Postfix cannot be run here (its commands are not installed), or None."""
    for tool in ("postfix", "postconf", "postqueue"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"`{tool}` not found: install the Debian package postfix (`make test-deps`)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


# Postfix's own services, all outside a chroot; the front smtpd is the one clients use.
BASE_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{front}     inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/front
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

BASE_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.test
mydomain = postfix.test
myorigin = $myhostname
# Loopback only: listen on 127.0.0.1, deliver nothing locally, send everything to the sink.
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
mynetworks = 127.0.0.0/8
relayhost = {relayhost}
# No DNS at all: next hops are [address]:port or names in /etc/hosts.
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
# Queue IDs that encode the time the message was queued, to the microsecond.
enable_long_queue_ids = yes
maillog_file = {log}
maillog_file_prefixes = {root}
biff = no
"""


def substitute(text: str, replacements: dict[str, str], what: str) -> str:
    """Replace each key by its value, insisting that every key is there."""
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{what} no longer contains {old!r}; update tests/postfix_support.py")
        text = text.replace(old, new)
    return text


def set_parameters(text: str, values: dict[str, str], what: str) -> str:
    """Change `name = value` lines of a main.cf text in place, as a site edits the snippet."""
    for name, value in values.items():
        line = f"{name} = {value}"
        text, n = re.subn(rf"(?m)^{re.escape(name)}[ \t]*=.*$", lambda _, line=line: line, text)
        if n != 1:
            raise AssertionError(f"{what} sets {name} {n} times, not once; update tests/postfix_support.py")
    return text


def dlp_snippets(lmtp_port: int, relay_port: int, secure_port: int, **main_cf: str) -> tuple[str, str]:
    """deploy/postfix/main.cf and master.cf with the gateway's LMTP port, the two reinjection
    ports and the main.cf parameters given (e.g. dlp_secure_CAfile) put in."""
    main = substitute((SNIPPETS / "main.cf").read_text(), {SNIPPET_LMTP: f"[127.0.0.1]:{lmtp_port}"},
                      "deploy/postfix/main.cf")
    main = set_parameters(main, main_cf, "deploy/postfix/main.cf")
    master = substitute((SNIPPETS / "master.cf").read_text(),
                        {SNIPPET_RELAY: f"127.0.0.1:{relay_port}", SNIPPET_SECURE: f"127.0.0.1:{secure_port}"},
                        "deploy/postfix/master.cf")
    return main, master


def _traversable_by_others(path: Path) -> bool:
    """Whether a process of another user can reach `path` (every ancestor has o+x)."""
    for p in [path, *path.parents]:
        try:
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
        except FileNotFoundError:
            continue
    return True


@dataclass
class QueuedMessage:
    queue_name: str
    queue_id: str
    sender: str
    recipients: list[dict[str, str]]

    def reasons(self) -> list[str]:
        return [r.get("delay_reason", "") for r in self.recipients]


@dataclass
class PostfixInstance:
    root: Path
    relayhost: str                       # e.g. "[127.0.0.1]:2525": where all ordinary mail goes
    main_cf: str = ""                    # appended to the base main.cf (later settings win)
    master_cf: str = ""                  # appended to the base master.cf
    front_port: int = 0                  # the smtpd clients use; 0 = pick a free one
    config_dir: Path = field(init=False)
    queue_dir: Path = field(init=False)
    data_dir: Path = field(init=False)
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        from tests.support import free_port

        self.front_port = self.front_port or free_port()
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.log_file = self.root / "maillog"
        # master(8) opens $data_directory/master.lock as the postfix user, by its absolute path:
        # the directory must be reachable by that user. pytest's temporary directories are not
        # (/tmp/pytest-of-root is 0700), so the data directory (only locks and the TLS PRNG
        # state live there) is then a private one in the system temporary directory, removed by stop().
        self._own_data_dir = not _traversable_by_others(self.root)
        self.data_dir = (Path(tempfile.mkdtemp(prefix="dlp-postfix-data-")) if self._own_data_dir
                         else self.root / "data")
        self._master_pid: int | None = None

    # ---------------------------------------------------------------- lifecycle

    def write_config(self) -> None:
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.data_dir, 0o700)
        main = BASE_MAIN_CF.format(queue=self.queue_dir, data=self.data_dir, relayhost=self.relayhost,
                                   log=self.log_file, root=self.root)
        (self.config_dir / "main.cf").write_text(main + "\n" + self.main_cf)
        master = BASE_MASTER_CF.format(front=f"127.0.0.1:{self.front_port}")
        (self.config_dir / "master.cf").write_text(master + "\n" + self.master_cf)

    def postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([_tool("postfix"), "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> PostfixInstance:
        self.write_config()
        # `postfix start` creates the queue directories with the owners and modes Postfix wants
        # (post-install create-missing) and returns once master(8) has initialised.
        out = self.postfix("start")
        if out.returncode != 0:
            self.kill_leftovers()
            raise RuntimeError(f"postfix start failed ({out.returncode}): {out.stderr}\n{self.log()}")
        self._master_pid = self.master_pid()
        return self

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        try:
            if self.master_pid() is not None:
                self.postfix("stop", timeout=30)
        finally:
            self.kill_leftovers()
            if self._own_data_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def processes(self) -> list[int]:
        """Processes of this instance: those started with MAIL_CONFIG set to its configuration
        directory (master(8) and every daemon it runs), and the master's children."""
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
            if marker in environ or (self._master_pid and ppid == str(self._master_pid)):
                found.append(int(entry.name))
        if self._master_pid and Path(f"/proc/{self._master_pid}").exists():
            found.append(self._master_pid)
        return sorted(set(found) - {os.getpid()})

    def kill_leftovers(self) -> None:
        deadline = time.monotonic() + 5
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # ---------------------------------------------------------------- looking at it

    def queue(self) -> list[QueuedMessage]:
        """Every message in the queue (postqueue -j), in whatever queue it is."""
        out = subprocess.run([_tool("postqueue"), "-c", str(self.config_dir), "-j"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise RuntimeError(f"postqueue -j failed: {out.stderr}")
        return [QueuedMessage(m["queue_name"], m["queue_id"], m["sender"], m["recipients"])
                for m in map(json.loads, out.stdout.splitlines())]

    def flush(self) -> None:
        """Try every deferred message again now (postqueue -f)."""
        subprocess.run([_tool("postqueue"), "-c", str(self.config_dir), "-f"], check=True,
                       capture_output=True, timeout=30)

    def parameter(self, name: str) -> str:
        """A main.cf parameter's value as this instance sees it (postconf -h)."""
        out = subprocess.run([_tool("postconf"), "-c", str(self.config_dir), "-h", name],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip()

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


# ------------------------------------------------------------------------ long queue IDs

# With enable_long_queue_ids, a queue ID starts with the time the queue file was made:
# 6 base-52 digits of seconds (until the year 2596), then 4 of microseconds, then "z" and the inode number.
_QID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"


def _b52(digits: str) -> int:
    value = 0
    for ch in digits:
        value = value * 52 + _QID_ALPHABET.index(ch)
    return value


def queued_at(queue_id: str) -> float:
    """The Unix time a long Postfix queue ID was made, to the microsecond."""
    if len(queue_id) < 12 or queue_id[10] != "z":
        raise ValueError(f"{queue_id!r} is not a long queue ID (enable_long_queue_ids = yes)")
    return _b52(queue_id[:6]) + _b52(queue_id[6:10]) / 1e6
