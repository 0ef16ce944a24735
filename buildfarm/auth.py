"""Users' API tokens with roles, and the secrets builds may ask for. Both live in Redis.

A token is shown once, when it is created; Redis keeps only its sha256. Roles are ordered:
a viewer reads, a submitter also submits, cancels and rebuilds, an admin also manages tokens
and secrets. A token made with `hook` may also record builds as triggered by a git push (kind
`hook`, with the pusher as the user): the post-receive hook's token.

Secret values are encrypted (Fernet: AES-128-CBC with HMAC-SHA256) with the farm's key, which is
not in Redis: BUILDFARM_SECRETS_KEY, else DATA_DIR/secrets.key (generated, mode 0600). Whoever
reads Redis (a scheduler host, a backup, a replica) gets no secret; the API decrypts them only for
the agent of a build that asked for them. Each secret's scope (which builds may use it, scopes.py)
is kept beside it, in clear: it is no secret, and `buildfarm secret list` shows it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from cryptography.fernet import Fernet, InvalidToken

from .config import local_secret
from .keys import build as build_key
from .records import token_digest
from .states import ROLES

from .keys import SECRET_SCOPES as SCOPES
from .keys import ADMIN_BOOTSTRAP, SECRETS, TOKEN_NAMES, TOKENS
SEALED = "fernet:"
KEY_ENV = "BUILDFARM_SECRETS_KEY"
USER_NAME = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words in logs
BOOTSTRAP_TTL = 10  # seconds: a process that died while making the admin token holds up the others no longer
BOOTSTRAP_WAIT = 60.0  # seconds a process waits for another to write the admin token

# Replace the admin token (ARGV[2]: its digest, ARGV[3]: its record) in one step, only while the
# caller (ARGV[1]) still holds the bootstrap lock: a holder whose lock expired changes nothing.
_REPLACE_ADMIN = """
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
local old = redis.call('HGET', KEYS[2], 'admin')
if old then redis.call('HDEL', KEYS[1], old) end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], 'admin', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Principal:
    user: str
    role: str
    hook: bool = False  # may record `hook` triggers (the post-receive hook's token)

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _record(user: str, role: str, hook: bool = False) -> str:
    return json.dumps({"user": user, "role": role, "created_at": time.time(), "hook": hook})


class TokenStore:
    def __init__(self, r: redis.Redis):
        self.r = r
        self._replace_admin = r.register_script(_REPLACE_ADMIN)
        self._release = r.register_script(_RELEASE)

    def create(self, user: str, role: str, hook: bool = False) -> str:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        if not USER_NAME.match(user):
            raise ValueError(f"{user!r} is not a token name; use letters, digits, '.', '_', '-' or '@' (1-64)")
        if self.r.hexists(TOKEN_NAMES, user):
            raise ValueError(f"a token named {user!r} exists; revoke it first or pick another name")
        token = "bf_" + secrets.token_urlsafe(30)
        sha = token_digest(token)
        pipe = self.r.pipeline()
        pipe.hset(TOKENS, sha, _record(user, role, hook))
        pipe.hset(TOKEN_NAMES, user, sha)
        pipe.execute()
        return token

    def check(self, token: str) -> Principal | None:
        if not token:
            return None
        raw = self.r.hget(TOKENS, token_digest(token))
        if not raw:
            return None
        info = json.loads(raw)
        return Principal(info["user"], info["role"], bool(info.get("hook")))

    def list(self) -> list[dict]:
        out = []
        for sha, raw in self.r.hgetall(TOKENS).items():
            info = json.loads(raw)
            out.append({"user": info["user"], "role": info["role"], "created_at": info["created_at"],
                        "hook": bool(info.get("hook"))})
        return sorted(out, key=lambda t: t["user"])

    def revoke(self, user: str) -> bool:
        sha = self.r.hget(TOKEN_NAMES, user)
        if not sha:
            return False
        pipe = self.r.pipeline()
        pipe.hdel(TOKENS, sha)
        pipe.hdel(TOKEN_NAMES, user)
        pipe.execute()
        return True

    def bootstrap_admin(self, path: Path, wait: float = BOOTSTRAP_WAIT) -> str:
        """The admin token in DATA_DIR/admin.token (0600): the one there while it is valid, else a new
        one that replaces the old admin token. API replicas starting at once on one Redis and one data
        directory all come here: the one that takes the bootstrap lock in Redis (SET NX, expiring
        should its holder die) makes the token and writes the file; the others read it there."""
        end = time.monotonic() + wait
        me = secrets.token_hex(16)
        while True:
            if token := self._valid_in(path):
                return token
            if self.r.set(ADMIN_BOOTSTRAP, me, nx=True, ex=BOOTSTRAP_TTL):
                try:
                    return self._valid_in(path) or self._new_admin(path, me)  # written meanwhile, or made here
                finally:
                    self._release(keys=[ADMIN_BOOTSTRAP], args=[me])
            if time.monotonic() > end:
                raise RuntimeError(f"no valid admin token in {path} after {wait:g} s: another process holds "
                                   f"{ADMIN_BOOTSTRAP} in Redis and has not written one")
            time.sleep(0.05)

    def _valid_in(self, path: Path) -> str | None:
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            return None
        return token if self.check(token) else None

    def _new_admin(self, path: Path, lock: str) -> str:
        token = "bf_" + secrets.token_urlsafe(30)
        if not self._replace_admin(keys=[TOKENS, TOKEN_NAMES, ADMIN_BOOTSTRAP],
                                   args=[lock, token_digest(token), _record("admin", "admin")]):
            raise RuntimeError(f"the admin token bootstrap lock ({ADMIN_BOOTSTRAP}) expired before the token "
                               f"was made; start again")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{lock}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        tmp.replace(path)
        return token


class SecretUnreadable(Exception):
    """A stored secret that this farm's key cannot decrypt; the message says what to do."""


def _valid_key(key: str) -> bool:
    try:
        Fernet(key)
    except ValueError:
        return False
    return True


# Set a stored secret's scope (ARGV[2]; "" unscopes it), in one step with the check that it exists.
_SET_SCOPE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] == '' then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 1
"""


class SecretStore:
    def __init__(self, r: redis.Redis, key_file: Path):
        self.r = r
        self._set_scope = r.register_script(_SET_SCOPE)
        self.key_file = Path(key_file)
        self._fernet: Fernet | None = None

    def _key(self) -> Fernet:
        if self._fernet is None:  # read (or made) when first needed: most processes never need it
            self._fernet = Fernet(local_secret(
                KEY_ENV, self.key_file, lambda: Fernet.generate_key().decode(), _valid_key,
                expected="a Fernet key: 32 bytes in URL-safe base64, 44 characters, as "
                         "`python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'` "
                         "prints"))
        return self._fernet

    def check_key(self) -> None:
        """Read (or make) the key now: a farm whose key is unusable does not start."""
        self._key()

    def _seal(self, value: str) -> str:
        return SEALED + self._key().encrypt(value.encode()).decode()

    def _open(self, name: str, stored: str) -> str:
        if not stored.startswith(SEALED):
            return stored  # written before secrets were encrypted, and not sealed yet (see seal_plain)
        try:
            return self._key().decrypt(stored[len(SEALED):].encode()).decode()
        except InvalidToken:
            raise SecretUnreadable(
                f"secret {name} cannot be decrypted with this farm's key ({KEY_ENV} or {self.key_file}); "
                f"the key was replaced since it was set: set it again with `buildfarm secret set {name}`") from None

    def set(self, name: str, value: str, scope: str | None = None) -> None:
        """Store a value; `scope` (JSON, "" for none) replaces its scope, None keeps it."""
        if not SECRET_NAME.match(name):
            raise ValueError(f"{name!r} is not a secret name; it becomes an environment variable, so use "
                             f"letters, digits and '_' (not starting with a digit)")
        if name.upper().startswith("BUILDFARM_"):
            raise ValueError(f"{name!r}: the BUILDFARM_ prefix is reserved for the farm")
        if len(value) < MIN_SECRET_LENGTH:
            raise ValueError(f"secret {name} is shorter than {MIN_SECRET_LENGTH} characters; so short a value "
                             f"cannot be masked in logs without masking ordinary text")
        with self.r.pipeline() as p:
            p.hset(SECRETS, name, self._seal(value))
            if scope == "":
                p.hdel(SCOPES, name)
            elif scope is not None:
                p.hset(SCOPES, name, scope)
            p.execute()

    def set_scope(self, name: str, scope: str) -> bool:
        """Replace a stored secret's scope (JSON; "" unscopes it); False when there is no such secret."""
        return bool(self._set_scope(keys=[SECRETS, SCOPES], args=[name, scope]))

    def scopes(self, names: list[str]) -> dict[str, str | None]:
        """The scope (JSON) of each named secret; None when it has none."""
        return dict(zip(names, self.r.hmget(SCOPES, names))) if names else {}

    def listing(self) -> list[tuple[str, str | None]]:
        """(name, scope JSON or None) of every secret, by name."""
        return list(self.scopes(self.names()).items())

    def seal_plain(self) -> int:
        """Encrypt the values an earlier version kept in clear; returns how many."""
        plain = {n: v for n, v in self.r.hgetall(SECRETS).items() if not v.startswith(SEALED)}
        if plain:
            self.r.hset(SECRETS, mapping={n: self._seal(v) for n, v in plain.items()})
        return len(plain)

    def names(self) -> list[str]:
        return sorted(self.r.hkeys(SECRETS))

    def delete(self, name: str) -> bool:
        with self.r.pipeline() as p:
            p.hdel(SECRETS, name)
            p.hdel(SCOPES, name)
            return bool(p.execute()[0])

    def missing(self, names: list[str]) -> list[str]:
        if not names:
            return []
        have = self.r.hmget(SECRETS, names)
        return [n for n, v in zip(names, have) if v is None]

    # A build's own one-time secrets (BuildSpec.secret_env), kept until the build ends.
    def keep_for_build(self, build_id: str, values: dict[str, str]) -> None:
        self.r.hset(build_key(build_id) + ":secrets", mapping={n: self._seal(v) for n, v in values.items()})

    def for_build(self, build_id: str) -> dict[str, str]:
        return {n: self._open(n, v) for n, v in self.r.hgetall(build_key(build_id) + ":secrets").items()}

    def drop_for_build(self, build_id: str) -> None:
        self.r.delete(build_key(build_id) + ":secrets")

    def values(self, names: list[str]) -> dict[str, str]:
        """The values of the named secrets (a name deleted since is left out). Raises
        SecretUnreadable for a value this farm's key cannot decrypt."""
        if not names:
            return {}
        return {n: self._open(n, v) for n, v in zip(names, self.r.hmget(SECRETS, names)) if v is not None}
