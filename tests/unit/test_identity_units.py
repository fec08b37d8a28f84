"""Pure logic of identity across receivers: signed tokens (keys, rotation, expiry, revocation,
reloading), run keys scoped by client, and the reserved ``trackbridge.*`` tags."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import jwt
import pytest

from bridge.convert import check_batch
from bridge.errors import BatchRejected, MlflowException
from bridge.pb.v1 import events_pb2
from bridge.secret import redact_text
from bridge.validation import SDK_TAGS, validate_tag
from server.flush.credentials import configured_secrets
from server.ingest.ingestor import Ingestor
from server.queue.sqlite import Backlog, Queue, connect
from server.security.auth import Authenticator, Refused
from server.security.config import SecurityConfig
from server.security.fleet import FleetTokens, append_revocation, parse_revocations
from server.security.ownership import client_run_key, owned_key, run_key_problem
from server.security.signed import (
    AUDIENCE,
    SignedClaims,
    key_map,
    new_key_line,
    parse_keys,
    sign,
    token_id_of,
    verify,
)
from server.security.tokens import TokenRefused, TokenStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _keys(*ids: str) -> str:
    return "\n".join(new_key_line(key_id) for key_id in ids) + "\n"


def _secret_of(line: str) -> str:
    return line.split(" ", 1)[1].strip()


# -- keys ----------------------------------------------------------------------------------------


def test_keys_parse_with_comments_and_the_first_signs() -> None:
    text = "# the fleet's keys\n\n" + _keys("k2", "k1")
    keys = parse_keys(text, "keys")
    assert [k.key_id for k in keys] == ["k2", "k1"]
    assert all(len(k.secret) == 32 for k in keys)
    _token, claims = sign(keys, "site-1", 60)
    assert claims.key_id == "k2"
    _token, claims = sign(keys, "site-1", 60, key_id="k1")
    assert claims.key_id == "k1"
    with pytest.raises(ValueError, match="no key 'k9'"):
        sign(keys, "site-1", 60, key_id="k9")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("k1\n", "line 1: expected '<key id> <secret>'"),
        ("bad/id c2VjcmV0\n", "line 1: expected"),
        ("k1 not*base64!\n", "line 1: key k1's secret is not base64"),
        ("k1 " + base64.urlsafe_b64encode(b"short").decode() + "\n", "5 bytes; at least 32"),
    ],
)
def test_bad_keys_are_refused_by_line_without_the_secret(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="keys file f") as excinfo:
        parse_keys(text, "keys file f")
    assert problem in str(excinfo.value)
    secret = text.partition(" ")[2].strip()
    if len(secret) >= 4:
        assert secret not in str(excinfo.value)


def test_a_key_listed_twice_is_refused() -> None:
    line = new_key_line("k1")
    with pytest.raises(ValueError, match="line 2: key id k1 is listed twice"):
        parse_keys(f"{line}\n{new_key_line('k1')}\n", "f")
    with pytest.raises(ValueError, match="key id must be"):
        new_key_line("no spaces please")


# -- signing and verifying -------------------------------------------------------------------------


def test_a_signed_token_carries_client_expiry_and_id_and_verifies_with_any_listed_key() -> None:
    keys = parse_keys(_keys("k1"), "f")
    token, claims = sign(keys, "site-1", 3600, now_s=1_000_000)
    assert (claims.client_id, claims.issued_at_s, claims.expires_at_s) == (
        "site-1",
        1_000_000,
        1_003_600,
    )
    assert claims.shown_id.startswith("tbs_") and token_id_of(claims.shown_id) == claims.token_id
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "HS256", "kid": "k1", "typ": "JWT"}
    body = jwt.decode(token, options={"verify_signature": False})
    assert body == {
        "sub": "site-1",
        "jti": claims.token_id,
        "iat": 1_000_000,
        "exp": 1_003_600,
        "aud": AUDIENCE,
    }
    assert keys[0].secret.hex() not in repr(keys[0])

    token, claims = sign(keys, "site-1", 3600)
    # Rotation: a receiver that also holds a newer key still accepts the older key's tokens.
    rotated = parse_keys(_keys("k2") + f"k1 {_secret_b64(keys[0].secret)}\n", "f")
    assert verify(token, key_map(rotated)) == claims
    # Once the old key is gone, its tokens are refused, saying why.
    with pytest.raises(TokenRefused, match="a key this receiver does not hold"):
        verify(token, key_map(rotated[:1]))


def _secret_b64(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).decode().rstrip("=")


def test_forged_tampered_and_foreign_tokens_are_refused_without_echo() -> None:
    keys = parse_keys(_keys("k1"), "f")
    token, claims = sign(keys, "site-1", 3600)
    head, body, signature = token.split(".")
    other = parse_keys(_keys("k1"), "f")  # same id, another secret
    plain = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    forged_body = base64.urlsafe_b64encode(plain.replace(b"site-1", b"site-2")).decode()
    cases = {
        "another secret under the same key id": sign(other, "site-1", 3600)[0],
        "a changed payload": f"{head}.{forged_body}.{signature}",
        "a changed signature": f"{head}.{body}.{signature[::-1]}",
        "unsigned (alg none)": jwt.encode({"sub": "site-1"}, None, algorithm="none"),
        "another audience": jwt.encode(
            {"sub": "site-1", "jti": "ab" * 6, "iat": 1, "exp": 2**40, "aud": "other"},
            keys[0].secret,
            algorithm="HS256",
            headers={"kid": "k1"},
        ),
        "no expiry": jwt.encode(
            {"sub": "site-1", "jti": "ab" * 6, "iat": 1, "aud": AUDIENCE},
            keys[0].secret,
            algorithm="HS256",
            headers={"kid": "k1"},
        ),
        "not a token": "hunter2-hunter2",
        "empty": "",
    }
    for case, bad in cases.items():
        with pytest.raises(TokenRefused) as excinfo:
            verify(bad, key_map(keys))
        message = str(excinfo.value)
        assert message == "the client token is not valid (unknown or wrong)", (case, message)
        assert (not bad or bad not in message) and signature not in message
    assert verify(token, key_map(keys)) == claims


def test_an_expired_token_is_refused_naming_its_id() -> None:
    keys = parse_keys(_keys("k1"), "f")
    token, claims = sign(keys, "site-1", 10, now_s=time.time() - 100)
    with pytest.raises(TokenRefused, match=f"client token {claims.shown_id} expired at"):
        verify(token, key_map(keys))
    with pytest.raises(ValueError, match="expire later than now"):
        sign(keys, "site-1", 0)
    with pytest.raises(ValueError, match="client id must be 1 to 256"):
        sign(keys, "", 60)


# -- revocation lists and reloading ----------------------------------------------------------------


def test_revocations_name_tokens_or_a_clients_tokens_issued_until_a_time() -> None:
    claims = SignedClaims("site-1", "ab12" * 3, "k1", issued_at_s=1000, expires_at_s=9999)
    listed = parse_revocations(
        "# revoked\n\ntbs_ab12ab12ab12  # lost laptop\nclient site 2 1500\n", "r"
    )
    assert listed.revoked(claims)
    assert listed.clients == {"site 2": 1500}
    for issued, revoked in ((1499, True), (1500, True), (1501, False)):
        other = SignedClaims("site 2", "cd34" * 3, "k1", issued, 9999)
        assert listed.revoked(other) is revoked
    assert not parse_revocations("", "r").revoked(claims)
    with pytest.raises(ValueError, match="r line 1: expected 'tbs_<id>'"):
        parse_revocations("tbt_123.secret\n", "r")
    with pytest.raises(ValueError, match="r line 2: expected 'client <client id> <time>'"):
        parse_revocations("tbs_ab12ab12ab12\nclient site-1 yesterday\n", "r")


def test_the_fleet_verifier_rereads_keys_and_revocations_when_they_change(tmp_path: Path) -> None:
    keys_file, revoked = tmp_path / "fleet.keys", tmp_path / "revoked.txt"
    k1 = new_key_line("k1")
    keys_file.write_text(k1 + "\n")
    keys_file.chmod(0o600)
    revoked.write_text("")
    clock = FakeClock()
    fleet = FleetTokens(str(keys_file), "", str(revoked), clock=clock)
    assert fleet.key_ids == ("k1",)
    old = parse_keys(k1, "f")
    token, claims = sign(old, "site-1", 3600)
    assert fleet.verify(token) == "site-1"

    # A revocation is seen at the next check, without a restart.
    append_revocation(revoked, claims.shown_id)
    assert fleet.verify(token) == "site-1", "checked at most once a second"
    clock.now += 1.0
    with pytest.raises(TokenRefused, match=f"{claims.shown_id} was revoked"):
        fleet.verify(token)

    # Rotation: a new key is added first, the old one removed later.
    k2 = new_key_line("k2")
    keys_file.write_text(f"{k2}\n{k1}\n")
    clock.now += 1.0
    new_token, _ = sign(parse_keys(k2, "f"), "site-2", 3600)
    assert fleet.verify(new_token) == "site-2"
    assert fleet.key_ids == ("k2", "k1")
    keys_file.write_text(f"{k2}\n")
    clock.now += 1.0
    other, _ = sign(old, "site-3", 3600)
    with pytest.raises(TokenRefused, match="does not hold"):
        fleet.verify(other)

    # A file that goes bad keeps what was read before (a half-written file changes nothing).
    lost, lost_claims = sign(parse_keys(k2, "f"), "site-4", 3600)
    append_revocation(revoked, lost_claims.shown_id)
    clock.now += 1.0
    with pytest.raises(TokenRefused, match="revoked"):
        fleet.verify(lost)
    keys_file.write_text("k3\n")
    revoked.unlink()
    clock.now += 1.0
    assert fleet.verify(new_token) == "site-2"
    with pytest.raises(TokenRefused, match="revoked"):
        fleet.verify(lost)


def test_the_fleet_verifier_refuses_to_start_on_missing_or_bad_files(tmp_path: Path) -> None:
    keys_file = tmp_path / "fleet.keys"
    with pytest.raises(ValueError, match=f"token keys file {keys_file}: cannot read"):
        FleetTokens(str(keys_file))
    line = new_key_line("k1")
    keys_file.write_text(line + "\n")
    with pytest.raises(ValueError, match=r"token revocation list .*missing\.txt: cannot read"):
        FleetTokens(str(keys_file), "", str(tmp_path / "missing.txt"))
    keys_file.write_text("k1 x\n")
    with pytest.raises(ValueError, match="line 1") as excinfo:
        FleetTokens(str(keys_file))
    assert _secret_of(line) not in str(excinfo.value)
    fleet = FleetTokens("", line)  # the keys themselves, from the environment
    token, _ = sign(parse_keys(line, "f"), "site-1", 60)
    assert fleet.verify(token) == "site-1"


def test_a_revocation_is_added_atomically_keeping_the_list(tmp_path: Path) -> None:
    path = tmp_path / "revoked.txt"
    append_revocation(path, "tbs_ab12ab12ab12")
    append_revocation(path, "client site-1 1700000000")
    listed = parse_revocations(path.read_text(), "r")
    assert listed.token_ids == {"ab12ab12ab12"} and listed.clients == {"site-1": 1700000000}
    assert [p.name for p in tmp_path.iterdir()] == ["revoked.txt"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


# -- the authenticator -----------------------------------------------------------------------------


def test_signed_and_receiver_tokens_both_authenticate(tmp_path: Path) -> None:
    line = new_key_line("k1")
    store = TokenStore(tmp_path / "tokens.db")
    local = store.issue("site-1")
    signed, _ = sign(parse_keys(line, "f"), "site-2", 60)
    auth = Authenticator(
        store, require_tokens=False, mutual_tls=False, signed=FleetTokens("", line)
    )
    for token, client in ((local, "site-1"), (signed, "site-2")):
        identity = auth.authenticate((("authorization", f"Bearer {token}"),), {})
        assert identity is not None and identity.client_ids == {client}
    # Fleet keys make tokens required although none was issued here.
    empty = TokenStore(tmp_path / "other.db")
    auth = Authenticator(
        empty, require_tokens=False, mutual_tls=False, signed=FleetTokens("", line)
    )
    with pytest.raises(Refused) as excinfo:
        auth.authenticate((), {})
    assert excinfo.value.code.name == "UNAUTHENTICATED"
    store.close()
    empty.close()


def test_token_keys_settings_are_checked_and_never_shown(tmp_path: Path) -> None:
    line = new_key_line("k1")
    config = SecurityConfig.resolve(env={"TRACKBRIDGE_TOKEN_KEYS": line})
    assert config.signed_tokens and config.token_keys == line
    assert _secret_of(line) not in repr(config) and "token_keys='***'" in repr(config)
    given = SecurityConfig.resolve(token_keys_file="f.keys", env={"TRACKBRIDGE_TOKEN_KEYS": line})
    assert (given.token_keys_file, given.token_keys) == ("f.keys", "")
    with pytest.raises(ValueError, match="not both"):
        SecurityConfig(token_keys_file="f.keys", token_keys=line)
    with pytest.raises(ValueError, match="revocation list needs the fleet's token keys"):
        SecurityConfig(token_revocations_file="r.txt")


# -- run keys belong to their client ---------------------------------------------------------------


def test_owned_keys_split_back_even_for_client_ids_with_slashes() -> None:
    for client in ("site-1", "spiffe://org/site-1", "a/b"):
        key = owned_key(client, "3f9a")
        assert client_run_key(key) == "3f9a" and key.startswith(client)
    assert owned_key("a", "b") != owned_key("a/b", "") and owned_key("A", "k") != owned_key(
        "B", "k"
    )
    assert client_run_key("legacy-key") == "legacy-key"
    assert run_key_problem("3f9a") is None
    assert run_key_problem("x/y") == "run_key may not contain '/'"


def test_the_ingestor_keys_runs_by_owner_and_carries_on_from_unscoped_records(
    tmp_path: Path,
) -> None:
    conn = connect(tmp_path / "queue.db")
    queue = Queue(conn)
    # A record from before run keys were scoped, then the same run under its owned key.
    queue.store([("k1", "site-1", "job", 1, 5, b"")])
    queue.set_mlflow_run("k1", "run-1", "7")
    ingestor = Ingestor(queue, lambda _key, _n: None, Backlog(0))
    state = ingestor.lookup(owned_key("site-1", "k1"))
    assert (state.acked_seq, state.run_id, state.experiment_id) == (5, "run-1", "7")
    assert ingestor.lookup(owned_key("site-2", "k1")).acked_seq == 0
    assert ingestor.owner("k1") == "site-1"
    conn.close()


# -- reserved tags ---------------------------------------------------------------------------------


def test_reserved_tags_are_refused_with_mlflows_error_code() -> None:
    for key in ("trackbridge.client_id", "trackbridge.run_key", "trackbridge.anything"):
        with pytest.raises(MlflowException) as excinfo:
            validate_tag(key, "x")
        assert excinfo.value.error_code == "INVALID_PARAMETER_VALUE"
        assert excinfo.value.message == (
            f"Invalid value \"{key}\" for parameter 'key' supplied: tag keys starting with"
            " 'trackbridge.' are reserved: the trackbridge receiver sets them (they name the"
            " run's owner); use another key"
        )
    assert validate_tag("trackbridge_like", "x") == "x"
    assert validate_tag("trackbridge.rank", "1", allowed_reserved=SDK_TAGS) == "1"
    with pytest.raises(MlflowException):
        validate_tag("trackbridge.rank", "1")


def test_a_batch_with_a_reserved_tag_is_rejected_but_the_sdks_rank_tag_passes() -> None:
    def batch(event: events_pb2.Event) -> events_pb2.EventBatch:
        msg = events_pb2.EventBatch(client_id="a", job="j", run_key="k", first_seq=1)
        msg.events.append(event)
        return msg

    start = events_pb2.Event()
    start.run_start.tags["trackbridge.client_id"] = "b"
    tag = events_pb2.Event()
    tag.tag.key, tag.tag.value = "trackbridge.run_key", "k"
    delete = events_pb2.Event()
    delete.delete_tag.key = "trackbridge.client_id"
    for event in (start, tag, delete):
        with pytest.raises(BatchRejected, match=r"events\[0\]: Invalid value .*reserved"):
            check_batch(batch(event))
    rank = events_pb2.Event()
    rank.run_start.tags["trackbridge.rank"] = "1"
    check_batch(batch(rank))


def test_token_keys_given_as_text_are_redacted_from_logs() -> None:
    line = new_key_line("k1")
    secrets = configured_secrets({"TRACKBRIDGE_TOKEN_KEYS": f"# fleet\n{line}\n"})
    assert _secret_of(line) in secrets
    assert _secret_of(line) not in redact_text(f"oops {_secret_of(line)}", secrets)
