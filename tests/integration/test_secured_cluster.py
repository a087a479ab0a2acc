"""hitrun on a secured cluster: SCRAM over TLS with ACLs, as a managed Kafka runs it.

The test makes a throwaway CA and broker certificate with openssl, starts a
broker of its own whose only client listener is SASL_SSL, creates SCRAM users
with Kafka's storage tool and grants ACLs with Kafka's kafka-acls. The worker
(user `hitrun`), `hitrun produce` (user `shop`, SCRAM-SHA-256) and `hitrun
tail` work through it; `shop`, who may write only the shop's input topics,
cannot write to the admin topic.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError

from hitrun.dev.localkafka import LocalKafka, SaslSsl, free_port
from tests.integration.harness import settings_of, start_worker, unique_env, wait_for
from tests.integration.test_client_tools import hitrun, write_lines
from tests.integration.test_unpaid_live import LIVE_POLICY, checkout

USERS = {"admin": "admin-pw-1", "hitrun": "hitrun-pw-2", "shop": "shop-pw-3"}


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, and a broker key and certificate for 127.0.0.1 signed by it: (keystore, ca)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "broker.key", directory / "broker.csr", directory / "broker.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(ca_key))
    openssl(
        "req", "-x509", "-new", "-key", str(ca_key), "-days", "2",
        "-subj", "/CN=hitrun test CA", "-out", str(ca),
    )  # fmt: skip
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    openssl("req", "-new", "-key", str(key), "-subj", "/CN=127.0.0.1", "-out", str(csr))
    extensions = directory / "san.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    keystore = directory / "keystore.pem"  # key (PKCS#8) and chain, as Kafka's PEM keystore takes
    keystore.write_text(key.read_text() + cert.read_text() + ca.read_text())
    return keystore, ca


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    root = tmp_path_factory.mktemp("secured-kafka")
    keystore, ca = make_certificates(root / "tls")
    broker = LocalKafka(
        root / "broker", port=free_port(), heap_mb=384, sasl_ssl=SaslSsl(keystore, ca, USERS)
    )
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


def client_env(broker: LocalKafka, user: str, tmp_path: Path, mechanism: str) -> dict[str, str]:
    assert broker.sasl_ssl is not None
    password = tmp_path / f"{user}.password"
    password.write_text(USERS[user] + "\n")
    return {
        "HITRUN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "HITRUN_KAFKA_SASL_MECHANISM": mechanism,
        "HITRUN_KAFKA_SASL_USERNAME": user,
        "HITRUN_KAFKA_SASL_PASSWORD_FILE": str(password),
        "HITRUN_KAFKA_SSL_CAFILE": str(broker.sasl_ssl.ca),
    }


def test_worker_produce_and_tail_over_sasl_ssl_with_acls(
    secured: LocalKafka, tmp_path: Path
) -> None:
    env = unique_env(secured.bootstrap, tmp_path, **LIVE_POLICY)
    settings = settings_of(env)
    prefix = settings.app_id
    # The worker's principal owns the app's topics and group; the shop may only
    # write (and describe) its input topics.
    secured.acls(
        "--add", "--allow-principal", "User:hitrun", "--operation", "All",
        "--resource-pattern-type", "prefixed", "--topic", prefix, "--group", prefix,
    )  # fmt: skip
    secured.acls("--add", "--allow-principal", "User:hitrun", "--operation", "All", "--cluster")
    for topic in (settings.topic_checkouts, settings.topic_payments):
        secured.acls(
            "--add", "--allow-principal", "User:shop",
            "--operation", "Write", "--operation", "Describe", "--topic", topic,
        )  # fmt: skip
    listed = secured.acls("--list", "--principal", "User:shop")
    assert settings.topic_checkouts in listed and settings.topic_admin not in listed

    worker_env = env | client_env(secured, "hitrun", tmp_path, "SCRAM-SHA-512")
    shop_env = env | client_env(secured, "shop", tmp_path, "SCRAM-SHA-256")
    worker = start_worker(worker_env, tmp_path)
    try:
        events = write_lines(
            tmp_path / "events.jsonl",
            [orjson.dumps(checkout(f"cust-s{n}", f"o-s{n}")) for n in range(3)],
        )
        produced = hitrun(shop_env, "produce", str(events))
        assert produced.returncode == 0, produced.stderr
        assert "sent 3 event(s)" in produced.stdout
        wait_for(
            lambda: worker.metric("hitrun_alerts_total", type="order_expired") == 3,
            30,
            "the three unpaid orders to expire",
        )
        tailed = hitrun(
            worker_env, "tail", "--from-beginning", "--type", "order_expired",
            "--max", "3", "--idle-timeout", "20",
        )  # fmt: skip
        assert tailed.returncode == 0, tailed.stderr
        assert sorted(line.split()[2] for line in tailed.stdout.splitlines()) == [
            "customer=cust-s0",
            "customer=cust-s1",
            "customer=cust-s2",
        ]

        # The shop's principal cannot write to the admin topic, signed or not.
        blocked = hitrun(
            shop_env | {"HITRUN_ADMIN_KEY": "leaked-key"},
            "admin", "blacklist", "cust-s0", "--shop", "shop-1", "--reason", "x", "--as", "shop",
        )  # fmt: skip
        assert blocked.returncode != 0
        assert "cannot write to" in blocked.stderr and "Authorization" in blocked.stderr
        assert "Traceback" not in blocked.stderr
        shop = secured.sasl_ssl.client_options("shop", "SCRAM-SHA-256")  # type: ignore[union-attr]
        refusal = refused(secured.bootstrap, shop, settings.topic_admin)
        assert isinstance(refusal, TopicAuthorizationFailedError)
        # The same principal writes its own topic; without TLS or with a wrong password, nobody.
        asyncio.run(_send_once(secured.bootstrap, shop, settings.topic_payments))
        refused(secured.bootstrap, {}, settings.topic_checkouts)
        refused(secured.bootstrap, shop | {"sasl_plain_password": "guess"}, settings.topic_payments)
        assert worker.metric("hitrun_alerts_total", type="customer_blacklisted") == 0
    finally:
        worker.stop()
    assert USERS["hitrun"] not in (tmp_path / "worker.log").read_text()


def refused(bootstrap: str, options: dict, topic: str) -> KafkaError:
    """The error a write by this client meets (the test fails if the write succeeds)."""
    with warnings.catch_warnings():
        # aiokafka leaves the socket of a refused connection to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            asyncio.run(_send_once(bootstrap, options, topic))
        except KafkaError as exc:
            return exc
        finally:
            gc.collect()
    raise AssertionError(f"a write to {topic} was accepted")


async def _send_once(bootstrap: str, options: dict, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=8000, **options)
    try:
        await asyncio.wait_for(producer.start(), 15)
        await asyncio.wait_for(producer.send_and_wait(topic, b"{}", key=b"cust-s0"), 15)
    finally:
        await producer.stop()
