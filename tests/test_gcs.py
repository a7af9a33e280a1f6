"""gs:// workdirs and data dirs against a local GCS emulator (gcp-storage-emulator, in memory).

The emulator runs as a subprocess on 127.0.0.1 for this module. Every client is pointed at it
through its own variable, with credentials that need no lookup, so nothing leaves the machine:
gcsfs (etils.epath, the workdir lock): STORAGE_EMULATOR_HOST and fsspec's token "anon";
tensorstore (orbax's arrays): TENSORSTORE_GCS_HTTP_URL and GOOGLE_AUTH_TOKEN_FOR_TESTING;
array_record's reader (google-cloud-cpp): CLOUD_STORAGE_EMULATOR_ENDPOINT. The metadata servers
google-auth and tensorstore could ask point at a closed local port, and gcsfs's bucket-type
lookup (a gRPC call that would wait a minute for an emulator) is off. What was written is
listed through the emulator's JSON API, not through the code under test.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from lazy_jax import workdir as wd
from lazy_jax.config_base import load_config

BUCKET = "bucket"
VIT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "vit.py")
CLOSED_PORT = "127.0.0.1:1"  # nothing listens there: a metadata-server lookup fails at once, locally


# gcp-storage-emulator's media downloads lack the x-goog-generation header that GCS sends and that
# tensorstore reads (orbax's OCDBT manifests are read back while a checkpoint is written: "Malformed
# StorageGeneration" without it). The emulator is started through this shim, which adds it.
EMULATOR = """
import sys
from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj.get("metageneration", 1))
    except Exception:  # no such object: the emulator's own 404
        pass
    return _download(request, response, storage, *args, **kwargs)


objects.download = download  # before the server module builds its routes from it
from gcp_storage_emulator.__main__ import main

sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The emulator's URL, with every GCS client of this process pointed at it; stopped at the end."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("gcs") / "emulator.log"
    log = open(log_path, "wb")
    cmd = [sys.executable, "-c", EMULATOR, "start", "--host=127.0.0.1", f"--port={port}"]
    proc = subprocess.Popen(cmd + ["--in-memory", f"--default-bucket={BUCKET}", "-q"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the GCS emulator did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.2)
        env = {
            "STORAGE_EMULATOR_HOST": url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "TENSORSTORE_GCS_HTTP_URL": url,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": CLOSED_PORT,
            "GCE_METADATA_IP": CLOSED_PORT,
            "GCE_METADATA_ROOT": CLOSED_PORT,
        }
        saved_env = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        import fsspec
        import gcsfs.core

        saved_conf = fsspec.config.conf.get("gcs")
        fsspec.config.conf["gcs"] = {"token": "anon"}  # anonymous: no credentials looked up
        # The plain GCS file system even if gcsfs was imported before the variable above was set.
        for protocol in ("gs", "gcs"):
            fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
        gcsfs.core.GCSFileSystem.clear_instance_cache()
        try:
            yield url
        finally:
            gcsfs.core.GCSFileSystem.clear_instance_cache()
            if saved_conf is None:
                fsspec.config.conf.pop("gcs", None)
            else:
                fsspec.config.conf["gcs"] = saved_conf
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def bucket_objects(url: str, prefix: str) -> list[str]:
    """Names of the emulator's objects under `prefix`, read with its JSON API."""
    names, token = [], None
    while True:
        query = {"prefix": prefix, **({"pageToken": token} if token else {})}
        with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o?{urllib.parse.urlencode(query)}") as r:
            page = json.loads(r.read())
        names += [item["name"] for item in page.get("items", [])]
        token = page.get("nextPageToken")
        if not token:
            return sorted(names)


def put_object(url: str, key: str, data: bytes) -> None:
    """Writes one object with the emulator's upload API."""
    query = urllib.parse.urlencode({"uploadType": "media", "name": key})
    request = urllib.request.Request(f"{url}/upload/storage/v1/b/{BUCKET}/o?{query}", data=data, method="POST")
    request.add_header("Content-Type", "application/octet-stream")
    urllib.request.urlopen(request).read()


def get_object(url: str, key: str) -> bytes:
    with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o/{urllib.parse.quote(key, safe='')}?alt=media") as r:
        return r.read()


def upload_tree(url: str, local_dir: str, prefix: str) -> None:
    """Copies `local_dir` into the bucket under `prefix`."""
    for root, _, files in os.walk(local_dir):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                put_object(url, prefix + os.path.relpath(path, local_dir), f.read())


def tiny_config(data_dir, **overrides):
    """configs/vit.py:test (ViT-Mu/4 on digits, 6 steps, eval and checkpoint every 3)."""
    c = load_config(f"{VIT_CONFIG}:test")  # absolute: the tests change the current directory
    c.data.data_dir = data_dir
    for k, v in overrides.items():
        c[k] = v
    return c


def test_gs_workdir_trains_resumes_and_reports(gcs, digits_dir, tmp_path, monkeypatch, capsys):
    from lazy_jax import metrics_writer, report
    from lazy_jax.run import train_and_evaluate

    monkeypatch.chdir(tmp_path)  # a gs:// path taken for a local one would show up here as ./gs:/...
    monkeypatch.setattr(metrics_writer, "TB_SYNC_SECONDS", 0.0)  # copy the events at every row, not every minute
    workdir = f"gs://{BUCKET}/run"
    # Asynchronous checkpoints, as the full-size configs use: orbax writes gs:// through tensorstore.
    train_and_evaluate(tiny_config(digits_dir, async_checkpointing=True), workdir)
    names = bucket_objects(gcs, "run/")
    for name in ("run/metrics.jsonl", "run/config.json", "run/parameters.txt"):
        assert name in names, names
    for step in (3, 6):  # orbax on GCS marks a finished checkpoint with commit_success.txt
        assert any(n.startswith(f"run/checkpoints/{step}/state/") for n in names), names
        assert f"run/checkpoints/{step}/commit_success.txt" in names, names
    assert any(n.startswith("run/tb/events.out.tfevents") for n in names), names
    assert "run/.lock" not in names  # released at the end
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)  # nothing written locally
    rows = wd.read_metrics(workdir)
    assert [(r["step"], r["split"]) for r in rows] == [
        (1, "train"),
        (1, "eval"),
        (2, "train"),
        (3, "eval"),
        (4, "train"),
        (6, "train"),
        (6, "eval"),
    ]
    assert json.loads(wd.read_text(f"{workdir}/config.json"))["total_steps"] == 6

    # Resume from the bucket: 3 more steps continue at step 6 and append to the same metrics.
    capsys.readouterr()
    train_and_evaluate(tiny_config(digits_dir, total_steps=9), workdir)
    assert "resuming at step 6 of 9" in capsys.readouterr().out
    resumed = wd.read_metrics(workdir)
    assert resumed[: len(rows)] == rows
    keys = [(r["step"], r["split"]) for r in resumed]
    assert keys[len(rows) :] == [(8, "train"), (9, "train"), (9, "eval")], keys
    assert "run/checkpoints/9/commit_success.txt" in bucket_objects(gcs, "run/checkpoints/")

    # The report reads the bucket and writes its report/ there.
    path = report.write_report(workdir)
    assert os.fspath(path) == f"{workdir}/report/report.md"
    names = bucket_objects(gcs, "run/report/")
    assert {"run/report/report.md", "run/report/loss.png", "run/report/nonzero_frac_train.png"} <= set(names), names
    md = wd.read_text(path)
    assert "# Activation sparsity report: run" in md and "| train | 9 |" in md
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_gs_workdir_lock_refuses_a_live_run_and_takes_over_a_stale_one(gcs, tmp_path, monkeypatch, caplog):
    """flock cannot lock an object: a gs:// workdir's lock is an object holding pid, host and a refresh time."""
    from lazy_jax.run import WorkdirInUseError, WorkdirLock

    monkeypatch.chdir(tmp_path)
    workdir, key = f"gs://{BUCKET}/locked", f"locked/{wd.LOCK}"
    live = {"pid": 4242, "host": "other-host", "since": "2026-01-01 00:00:00", "refreshed": time.time(), "token": "x"}
    put_object(gcs, key, json.dumps(live).encode())
    with pytest.raises(WorkdirInUseError, match=r"workdir gs://bucket/locked is in use by another run \(pid 4242 on"):
        with WorkdirLock(workdir):
            pass
    assert json.loads(get_object(gcs, key)) == live  # the live run's lock stays

    # Not refreshed for longer than STALE_SECONDS: its run is gone (a preempted VM); taken over.
    put_object(gcs, key, json.dumps({**live, "refreshed": time.time() - wd.ObjectLock.STALE_SECONDS - 1}).encode())
    with WorkdirLock(workdir) as held:
        mine = json.loads(get_object(gcs, key))
        assert mine["pid"] == os.getpid() and mine["token"] == held.object_lock.token
        assert "taking over the lock gs://bucket/locked/.lock (pid 4242 on host other-host" in caplog.text
        with pytest.raises(WorkdirInUseError, match=f"pid {os.getpid()} on host"):  # now a second run refuses
            with WorkdirLock(workdir):
                pass
    assert bucket_objects(gcs, "locked/") == []  # released
    assert os.listdir(tmp_path) == []  # no local ./gs:/... lock file


def test_gs_data_dir_is_listed_found_and_trains(gcs, digits_dir, tmp_path):
    from lazy_jax.data import sources
    from lazy_jax.errors import InputError
    from lazy_jax.run import train_and_evaluate

    upload_tree(gcs, os.path.join(digits_dir, "digits"), "tfds/digits/")
    data_dir = f"gs://{BUCKET}/tfds"
    assert sources.available_datasets(data_dir) == ["digits"]
    version = sources.dataset_dir("digits", data_dir)
    assert version.startswith(f"{data_dir}/digits/") and sources.load_builder("digits", data_dir).info.splits
    # An offline dataset missing from a gs:// data dir: prepare locally and copy, not a build in the bucket.
    with pytest.raises(InputError, match=r"'mnist5k' is not prepared in the data dir 'gs://bucket/tfds'.*copy"):
        sources.dataset_dir("mnist5k", data_dir)
    assert not any(n.startswith("tfds/mnist5k") for n in bucket_objects(gcs, "tfds/"))

    out = train_and_evaluate(tiny_config(data_dir), tmp_path / "run")
    assert out["eval"] is not None and 0 <= out["eval"]["accuracy"] <= 1
    assert [r["step"] for r in wd.read_metrics(tmp_path / "run")][-1] == 6
    shutil.rmtree(tmp_path / "run")


def test_gs_sentencepiece_model_loads(gcs, pydocs_dir):
    """The pydocs tokenizer read from a gs:// data dir (prepared locally and copied there)."""
    from lazy_jax.data import tokenizer
    from lazy_jax.data.text_corpus import SPM_FILENAME

    local = next(os.path.join(root, SPM_FILENAME) for root, _, files in os.walk(pydocs_dir) if SPM_FILENAME in files)
    with open(local, "rb") as f:
        put_object(gcs, f"spm/{SPM_FILENAME}", f.read())
    remote = tokenizer.SentencePieceTokenizer(f"gs://{BUCKET}/spm/{SPM_FILENAME}")
    text = "def main(): return 0"
    assert list(remote.encode(text)) == list(tokenizer.SentencePieceTokenizer(local).encode(text))


def test_gs_sweep_compare_and_measure(gcs, digits_dir, tmp_path, monkeypatch):
    """A one-member sweep in a bucket, its comparison and a measurement of its checkpoint: every
    output lands in the bucket, nothing in the current directory."""
    from lazy_jax import compare, measure, sweep
    from lazy_jax.data import text_corpus
    from lazy_jax.errors import InputError

    sweep_file = tmp_path / "files" / "tiny_sweep.py"
    sweep_file.parent.mkdir()
    tiny = {"model.width": 16, "model.num_heads": 1, "model.depth": 1, "model.d_ff": 32, "total_steps": 2}
    sweep_file.write_text(f"def get_sweep(arg=None):\n    return {VIT_CONFIG + ':test'!r}, {{'tiny': {tiny!r}}}\n")
    run_here = tmp_path / "cwd"
    run_here.mkdir()
    monkeypatch.chdir(run_here)  # a gs:// path taken for a local one would show up here as ./gs:/...
    workdir = f"gs://{BUCKET}/sweep"
    assert sweep.run_sweep(str(sweep_file), workdir, extra={"data.data_dir": digits_dir}, echo=lambda _: None) == {
        "tiny": "trained"
    }
    assert sweep.run_sweep(str(sweep_file), workdir, extra={"data.data_dir": digits_dir}, echo=lambda _: None) == {
        "tiny": "finished before"
    }
    assert json.loads(get_object(gcs, "sweep/sweep.json"))["members"] == {"tiny": tiny}

    md_path = compare.write_compare(workdir)
    assert os.fspath(md_path) == f"{workdir}/compare/compare.md"
    names = set(bucket_objects(gcs, "sweep/compare/"))
    assert {"sweep/compare/compare.md", "sweep/compare/nonzero_frac.png"} <= names, names
    assert "| tiny |" in wd.read_text(md_path)

    out = measure.measure(workdir=f"{workdir}/tiny", num_batches=1, progress=False)
    assert os.fspath(out) == f"{workdir}/tiny/measure"
    names = set(bucket_objects(gcs, "sweep/tiny/measure/"))
    assert {"sweep/tiny/measure/report.md", "sweep/tiny/measure/measure.json"} <= names, names
    assert json.loads(get_object(gcs, "sweep/tiny/measure/measure.json"))["meta"]["step"] == 2
    assert os.listdir(run_here) == [], os.listdir(run_here)

    # pydocs is not built inside a bucket: prepare locally and copy.
    with pytest.raises(InputError, match=r"'pydocs' is not prepared in the data dir 'gs://bucket/text'.*copy"):
        text_corpus.prepare_pydocs(f"gs://{BUCKET}/text")
    assert bucket_objects(gcs, "text/") == []
