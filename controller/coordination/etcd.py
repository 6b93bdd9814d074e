"""etcd's v3 API over its JSON gateway (etcd3gw), across the members of a cluster: a member that does not
answer is passed over for the next, and no member answering is one clear error (`Unavailable`).

Keys and values are bytes on the wire (base64); here keys are text and values UTF-8 JSON or text. Reads
are linearizable (etcd's default), so a member cut off from the quorum does not answer them: what cannot
be confirmed is not read as absent."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from etcd3gw import exceptions
from etcd3gw.client import Etcd3Client
from requests.adapters import HTTPAdapter

from controller import errors, secrets
from controller.runtime.config import EtcdConfig

log = logging.getLogger("stagectl.etcd")

MAX_TXN_OPS = 128  # etcd's default --max-txn-ops: larger writes are cut into several transactions
PAGE = 500  # keys per range request when a prefix is read whole


class Unavailable(errors.ExternalFailure):
    """No member answered, or none could confirm (quorum lost): the state in etcd is unknown."""


class Refused(errors.ExternalFailure):
    """A member answered with a definite error (not found, invalid, permission denied): asking another
    member would get the same answer."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


NOT_FOUND = 5
# gRPC codes that say the member could not serve the request now (no leader, a request timed out inside
# etcd, cancelled, too many requests): another member may.
_PASS_OVER = {1, 4, 8, 14}


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int

    def text(self) -> str:
        return self.value.decode("utf-8")


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction: `target` MOD, CREATE, VERSION or LEASE of `key` equals `number`,
    or VALUE equals `value`."""

    key: str
    target: str
    number: int = 0
    value: bytes = b""

    def as_json(self) -> dict[str, object]:
        body: dict[str, object] = {"key": _b64(self.key), "target": self.target, "result": "EQUAL"}
        field = {"MOD": "mod_revision", "CREATE": "create_revision", "VERSION": "version", "LEASE": "lease"}
        if self.target == "VALUE":
            body["value"] = _b64(self.value)
        else:
            body[field[self.target]] = str(self.number)
        return body


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0

    def as_json(self) -> dict[str, object]:
        put: dict[str, object] = {"key": _b64(self.key), "value": _b64(self.value)}
        if self.lease:
            put["lease"] = str(self.lease)
        return {"request_put": put}


@dataclass(frozen=True, slots=True)
class Delete:
    key: str

    def as_json(self) -> dict[str, object]:
        return {"request_delete_range": {"key": _b64(self.key)}}


@dataclass(frozen=True, slots=True)
class Get:
    """A read inside a transaction (its answer is in `TxnResult.found`)."""

    key: str

    def as_json(self) -> dict[str, object]:
        return {"request_range": {"key": _b64(self.key)}}


Operation = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the cluster's revision after the transaction (a key it put has this mod_revision)
    found: tuple[KeyValue, ...] = ()  # what the branch taken read (`Get`)


class Etcd:
    """One client per member; requests go to the member that last answered, then to the others in turn."""

    def __init__(self, settings: EtcdConfig, *, base_dir: Path = Path(".")) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._preferred = 0
        self._token: str | None = None
        self._members = [self._client(url, base_dir) for url in settings.endpoints]

    def _client(self, url: str, base_dir: Path) -> Etcd3Client:
        parts = urlsplit(url)
        s = self.settings

        def path(value: str | None) -> str | None:
            if value is None:
                return None
            candidate = Path(value).expanduser()
            return str(candidate if candidate.is_absolute() else base_dir / candidate)

        session = requests.Session()
        # One instance's threads share the client: a worker per tenant, the keep-alive, the supervisor.
        session.mount(f"{parts.scheme}://", HTTPAdapter(pool_connections=1, pool_maxsize=64))
        # REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE in the environment would override the bundle named here
        # (requests merges them over the session's own), and a proxy variable would route loopback members
        # through a proxy: the configuration says how to reach etcd, the environment does not.
        session.trust_env = False
        session.verify = path(s.ca_bundle) or True
        if s.certificate_pem:  # with its key: the settings validator pairs them
            session.cert = (str(path(s.certificate_pem)), str(path(s.certificate_key_pem)))
        return Etcd3Client(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 2379,
            protocol=parts.scheme,
            timeout=s.timeout.total_seconds(),
            api_path="/v3/",
            session=session,
        )

    @property
    def endpoints(self) -> list[str]:
        return list(self.settings.endpoints)

    # --- requests, across members ------------------------------------------------------------------

    def call(self, path: str, body: Mapping[str, object], *, idempotent: bool = True) -> dict[str, Any]:
        """POST `body` to `path` of the first member that answers; `Unavailable` when none does.

        A member that answered with an error about its cluster (no leader, a request timed out inside
        etcd, too many requests) is passed over like one that did not answer. A request that is not
        `idempotent` (a transaction) is tried on the next member only when it cannot have reached the one
        before (the connection was refused): one whose answer timed out may have been applied, and its
        caller settles that by reading, never by sending it again."""
        failures: list[str] = []
        count = len(self._members)
        with self._lock:
            start = self._preferred
        for step in range(count):
            index = (start + step) % count
            member = self._members[index]
            try:
                answer = self._post(member, path, body)
            except (exceptions.Etcd3Exception, requests.RequestException, OSError) as error:
                code = _code(error)
                if code is not None and code not in _PASS_OVER:
                    raise Refused(f"etcd refused {path}: {_reason(error)}", code) from None
                failures.append(f"{self.settings.endpoints[index]}: {_reason(error)}")
                with self._lock:
                    if self._preferred == index:  # the next request starts with the next member
                        self._preferred = (index + 1) % count
                if not idempotent and not _refused(error):
                    break
                continue
            with self._lock:
                self._preferred = index
            return answer
        raise Unavailable(
            f"etcd did not answer ({'; '.join(failures)[:400]}): leadership and the shared state are unknown"
        )

    def _post(self, member: Etcd3Client, path: str, body: Mapping[str, object]) -> dict[str, Any]:
        if self.settings.username and self._token is None:
            self._authenticate(member)
        try:
            answer = member.post(member.get_url(path), json=dict(body))
        except exceptions.Etcd3Exception as error:
            if self.settings.username and "token" in str(error.detail_text or "").lower():
                self._authenticate(member)  # simple tokens expire: sign in again once
                answer = member.post(member.get_url(path), json=dict(body))
            else:
                raise
        if not isinstance(answer, dict):
            raise exceptions.Etcd3Exception("an answer that is not a JSON object")
        return answer

    def _authenticate(self, member: Etcd3Client) -> None:
        assert self.settings.password_ref is not None  # the settings validator pairs it with the user
        password = secrets.resolve(self.settings.password_ref)
        answer = member.post(
            member.get_url("/auth/authenticate"), json={"name": self.settings.username, "password": password}
        )
        token = str(answer.get("token", ""))
        if not token:
            raise exceptions.Etcd3Exception(f"etcd refused the user {self.settings.username}")
        self._token = token
        for client in self._members:
            client.session.headers["Authorization"] = token

    # --- the key-value store -----------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        return self.read(key)[0]

    def read(self, key: str) -> tuple[KeyValue | None, int]:
        """The key and the cluster's revision it was read at (read more at that revision: `prefix`)."""
        answer = self.call("/kv/range", {"key": _b64(key)})
        kvs = answer.get("kvs") or []
        return (_kv(kvs[0]) if kvs else None), int(answer.get("header", {}).get("revision", 0))

    def prefix(self, prefix: str, *, revision: int = 0) -> Iterator[KeyValue]:
        """Every key under `prefix`, in key order, a page at a time, all at one revision (`revision`, or
        the cluster's current one)."""
        start, end = prefix, _range_end(prefix)
        while True:
            body: dict[str, object] = {
                "key": _b64(start),
                "range_end": _b64(end),
                "limit": str(PAGE),
                "sort_order": "ASCEND",
                "sort_target": "KEY",
            }
            if revision:
                body["revision"] = str(revision)
            answer = self.call("/kv/range", body)
            revision = revision or int(answer.get("header", {}).get("revision", 0))
            kvs = [_kv(item) for item in answer.get("kvs") or []]
            yield from kvs
            if not answer.get("more") or not kvs:
                return
            start = kvs[-1].key + "\0"

    def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Operation],
        failure: Sequence[Get] = (),
        *,
        reads_only: bool = False,
    ) -> TxnResult:
        """All of `success` if every `compare` holds, else `failure` (reads only); at most MAX_TXN_OPS
        operations. What a `Get` of the branch taken read is in `found`, in order (a missing key: none)."""
        if len(success) > MAX_TXN_OPS:
            raise ValueError(f"a transaction of {len(success)} operations (at most {MAX_TXN_OPS})")
        answer = self.call(
            "/kv/txn",
            {
                "compare": [c.as_json() for c in compare],
                "success": [op.as_json() for op in success],
                "failure": [op.as_json() for op in failure],
            },
            idempotent=reads_only,  # a read may be asked of the next member; a write may have been applied
        )
        found = tuple(
            _kv(item)
            for response in answer.get("responses") or []
            for item in (response.get("response_range") or {}).get("kvs") or []
        )
        return TxnResult(
            succeeded=bool(answer.get("succeeded", False)),
            revision=int(answer.get("header", {}).get("revision", 0)),
            found=found,
        )

    # --- leases ------------------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        answer = self.call("/lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"])

    def keepalive(self, lease: int) -> int:
        """The lease's new TTL in seconds; 0 or less when it has expired (or was revoked)."""
        answer = self.call("/lease/keepalive", {"ID": str(lease)})
        result = answer.get("result", answer)
        return int(result.get("TTL", 0) or 0)

    def revoke(self, lease: int) -> None:
        try:
            self.call("/lease/revoke", {"ID": str(lease)})
        except Refused as error:
            if error.code != NOT_FOUND:  # already expired: what hung on it is gone, as asked
                raise


def _b64(data: str | bytes) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _range_end(prefix: str) -> bytes:
    raw = bytearray(prefix.encode("utf-8"))
    raw[-1] += 1  # prefixes here end in "/", never 0xff
    return bytes(raw)


def _kv(item: Mapping[str, Any]) -> KeyValue:
    return KeyValue(
        key=base64.b64decode(item.get("key", "")).decode("utf-8"),
        value=base64.b64decode(item.get("value", "")),
        mod_revision=int(item.get("mod_revision", 0)),
        create_revision=int(item.get("create_revision", 0)),
        lease=int(item.get("lease", 0)),
    )


def _code(error: BaseException) -> int | None:
    """The gRPC status code of an error etcd's gateway answered with, None when there was no such answer."""
    detail = getattr(error, "detail_text", None)
    if not isinstance(detail, str) or not detail.startswith("{"):
        return None
    try:
        code = json.loads(detail).get("code")
    except ValueError:
        return None
    return code if isinstance(code, int) else None


def _refused(error: BaseException) -> bool:
    """Whether the request cannot have reached the member: its connection was refused or never made."""
    text = str(error) + str(getattr(error, "detail_text", "") or "")
    return isinstance(error, exceptions.ConnectionFailedError) and (
        "Connection refused" in text or "NewConnectionError" in text or "Name or service" in text
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, exceptions.Etcd3Exception):
        detail = error.detail_text or ""
        return (f"{type(error).__name__}: {detail}" if detail else type(error).__name__)[:160]
    return f"{type(error).__name__}: {error}"[:160]
