"""Token revocation through a real Redis at 127.0.0.1:6379 (started by `make test`)."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from ringwall.server.redis_revocations import RedisRevocationList, add_revocation, member
from tests.support.backend_thread import running_backend
from tests.support.client import request
from tests.support.gateway_thread import running_gateway
from tests.support.tokens import AUDIENCE, ISSUER, RsaIssuer, claims

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_key() -> Iterator[str]:
    key = f"ringwall-test:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.fail("Redis is not running at 127.0.0.1:6379: run scripts/ensure-redis")
    try:
        yield key
    finally:
        client.delete(key)
        client.close()


def test_list_reads_what_was_added(redis_key: str) -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        now = time.time()
        await add_revocation(REDIS_URL, redis_key, "iss", "j-1", now + 60, now)
        await add_revocation(REDIS_URL, redis_key, "iss", "old", now - 1, now)
        revocations = RedisRevocationList(REDIS_URL, redis_key)
        await revocations.refresh()
        result = (
            revocations.is_revoked("iss", "j-1"),
            revocations.is_revoked("iss", "old"),
            revocations.is_revoked("other", "j-1"),
        )
        await revocations.close()
        return result

    assert asyncio.run(scenario()) == (True, False, False)


def test_expired_entries_pruned_on_write(redis_key: str) -> None:
    now = time.time()
    asyncio.run(add_revocation(REDIS_URL, redis_key, "iss", "stale", now - 5, now - 10))
    asyncio.run(add_revocation(REDIS_URL, redis_key, "iss", "fresh", now + 60, now))
    members = redis.Redis.from_url(REDIS_URL).zrange(redis_key, 0, -1)
    assert members == [member("iss", "fresh").encode()]


def test_unreachable_redis_keeps_last_list(redis_key: str) -> None:
    async def scenario() -> bool:
        revocations = RedisRevocationList("redis://127.0.0.1:1/0", redis_key)
        revocations._revoked = {member("iss", "j"): time.time() + 60}
        revocations.start(asyncio.get_running_loop())
        await asyncio.sleep(0.2)
        result = revocations.is_revoked("iss", "j")
        await revocations.close()
        return result

    assert asyncio.run(scenario()) is True


def test_gateway_rejects_token_revoked_in_redis(redis_key: str, tmp_path: Path) -> None:
    issuer = RsaIssuer()
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_bytes(issuer.jwks())
    with running_backend() as backend:
        config = f"""
server:
  timeouts: {{drain: 1s}}
auth:
  issuers:
    main:
      issuer: "{ISSUER}"
      jwks: "file:{jwks_path}"
      algorithms: [RS256]
      audiences: [{AUDIENCE}]
  revocations:
    redis: "{REDIS_URL}"
    redis_key: "{redis_key}"
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend.port}"]
routes:
  - path: /
    upstream: app
    auth: jwt
"""
        with running_gateway(config, tmp_path) as gateway:
            token = issuer.token(**claims(jti="revoke-me")).encode()
            raw = (
                b"GET /api/products HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %b\r\n\r\n" % token
            )
            before = request(gateway.port, raw).status
            now = time.time()
            asyncio.run(add_revocation(REDIS_URL, redis_key, ISSUER, "revoke-me", now + 300, now))
            time.sleep(1.0)
            after = request(gateway.port, raw).status
    assert before == 200
    assert after == 401


def test_api_key_revoked_in_redis(redis_key: str, tmp_path: Path) -> None:
    from ringwall.gateway.auth.api_keys import ApiKeyStore
    from ringwall.gateway.authentication import API_KEY_REVOCATION_ISSUER

    store = ApiKeyStore()
    record, secret = store.create("partner-1", now=time.time())
    key_file = tmp_path / "keys.json"
    store.save(key_file)
    with running_backend() as backend:
        config = f"""
server:
  timeouts: {{drain: 1s}}
auth:
  api_keys: {{file: "{key_file}"}}
  revocations: {{redis: "{REDIS_URL}", redis_key: "{redis_key}"}}
upstreams:
  app:
    targets: ["http://127.0.0.1:{backend.port}"]
routes:
  - path: /
    upstream: app
    auth: api_key
"""
        with running_gateway(config, tmp_path) as gateway:
            raw = (
                b"GET /api/products HTTP/1.1\r\nHost: a\r\nX-API-Key: %b\r\n\r\n"
                % secret.reveal().encode()
            )
            before = request(gateway.port, raw).status
            now = time.time()
            asyncio.run(
                add_revocation(
                    REDIS_URL, redis_key, API_KEY_REVOCATION_ISSUER, record.id, now + 300, now
                )
            )
            time.sleep(1.0)
            after = request(gateway.port, raw).status
    assert before == 200
    assert after == 401
