"""The claim check: params too big for a message go to a shared, hash-named file under
``_conveyor/claims/`` that each job links to, verified when loaded."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from conveyor.claims import CLAIMS_DIR
from conveyor.errors import BadMessage, MessageTooLarge
from conveyor.jobs import Job, decode_from_queue, encode_for_queue
from conveyor.storage import Storage
from conveyor.tempfiles import TEMP_PREFIX


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(tmp_path)


def big_job() -> Job:
    return Job(task="t", output="out/a", params={"rows": list(range(3000)), "name": "big"})


def test_small_message_is_sent_inline(storage: Storage) -> None:
    job = Job(task="t", output="out/a", params={"k": "v"})
    text = encode_for_queue(job, storage)
    assert text == job.to_json()
    assert not (storage.root / CLAIMS_DIR).exists()


def test_claim_check_round_trip(storage: Storage) -> None:
    job = big_job()
    text = encode_for_queue(job, storage, max_bytes=1024)
    assert len(text) <= 1024
    data = json.loads(text)
    assert "params" not in data
    ref = data["params_ref"]
    assert ref["path"] == f"{CLAIMS_DIR}/{job.job_id}.job.json"  # the job's own name
    assert (storage.root / ref["path"]).is_file()
    assert (storage.root / CLAIMS_DIR / f"{ref['sha256']}.json").is_file()  # shared
    # A receiver without the storage sees the reference only
    assert Job.from_json(text).params == {}
    assert Job.from_json(text).dedup_id == job.dedup_id
    decoded = decode_from_queue(text, storage)
    assert decoded == job
    assert decoded.params_ref is None


def test_claim_is_written_once_and_atomically(storage: Storage) -> None:
    first = encode_for_queue(big_job(), storage, max_bytes=1024)
    second = encode_for_queue(replace(big_job(), job_id="other"), storage, max_bytes=1024)
    refs = [json.loads(text)["params_ref"] for text in (first, second)]
    assert refs[0]["sha256"] == refs[1]["sha256"]
    claims = os.listdir(storage.root / CLAIMS_DIR)
    assert len(claims) == 3  # the shared file, and each job's name for it
    assert not any(name.startswith(TEMP_PREFIX) for name in claims)
    # One copy of the bytes: each job's name is a hard link to the shared file
    inodes = {(storage.root / ref["path"]).stat().st_ino for ref in refs}
    assert inodes == {(storage.root / CLAIMS_DIR / f"{refs[0]['sha256']}.json").stat().st_ino}


def test_tampered_claim_is_rejected(storage: Storage) -> None:
    text = encode_for_queue(big_job(), storage, max_bytes=1024)
    claim = storage.root / json.loads(text)["params_ref"]["path"]
    claim.write_text(claim.read_text().replace('"big"', '"bad"'))
    with pytest.raises(BadMessage, match="checksum"):
        decode_from_queue(text, storage)


def test_missing_claim_is_rejected(storage: Storage) -> None:
    text = encode_for_queue(big_job(), storage, max_bytes=1024)
    (storage.root / json.loads(text)["params_ref"]["path"]).unlink()
    with pytest.raises(BadMessage, match="missing"):
        decode_from_queue(text, storage)


def test_claim_reference_must_name_its_own_hash(storage: Storage) -> None:
    text = encode_for_queue(big_job(), storage, max_bytes=1024)
    data = json.loads(text)
    data["params_ref"]["path"] = "inputs/evil.json"
    with pytest.raises(BadMessage, match=r"'params_ref\.path'"):
        decode_from_queue(json.dumps(data), storage)
    data["params_ref"] = {"path": f"{CLAIMS_DIR}/x.json", "sha256": "x"}
    with pytest.raises(BadMessage, match=r"'params_ref\.sha256'"):
        decode_from_queue(json.dumps(data), storage)


def test_message_too_large_even_without_params(storage: Storage) -> None:
    job = Job(task="t", output="o/" + "x" * 200, params={"a": "b" * 500})
    with pytest.raises(MessageTooLarge, match="even without params"):
        encode_for_queue(job, storage, max_bytes=150)


def test_claims_are_created_owner_only(tmp_path: Path) -> None:
    storage = Storage(tmp_path / "root")
    old = os.umask(0o022)
    try:
        text = encode_for_queue(big_job(), storage, max_bytes=1024)
    finally:
        os.umask(old)
    ref = json.loads(text)["params_ref"]
    claims = storage.root / CLAIMS_DIR
    assert claims.stat().st_mode & 0o777 == 0o700
    assert (storage.root / "_conveyor").stat().st_mode & 0o777 == 0o700
    assert (storage.root / ref["path"]).stat().st_mode & 0o777 == 0o600
    for path in claims.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
