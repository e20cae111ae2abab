"""Downloading the IDX files without TensorFlow, against a real HTTP server on 127.0.0.1 serving
small fixture files (their checksums supplied to fetch): success, a wrong file, a connection
closed mid-file, a server that is down."""

import gzip
import hashlib
import http.server
import os
import socket
import threading
import time

import numpy as np
import pytest

from aaejax.data import datasets as data_lib
from aaejax.data import download
from aaejax.run import files as files_lib

SMALL = {"train": 60, "test": 10}


def _idx(array: np.ndarray) -> bytes:
    import struct

    return struct.pack(">I", 0x800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def _fixture_files():
    """{file name: (.gz bytes, uncompressed bytes)} of a tiny MNIST-shaped set."""
    rng = np.random.default_rng(0)
    raw = {"train-images-idx3-ubyte": _idx(rng.integers(0, 256, (60, 28, 28))),
           "train-labels-idx1-ubyte": _idx(np.arange(60) % 10),
           "t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (10, 28, 28))),
           "t10k-labels-idx1-ubyte": _idx(np.arange(10) % 10)}
    return {f"{stem}.gz": (gzip.compress(data, mtime=0), data) for stem, data in raw.items()}


class _Server:
    """A loopback HTTP server; `mode` per file name: "ok", "wrong" (other bytes), "cut" (closes
    after half the promised bytes), "late" (answers after 0.2 s) or "trickle" (sends the body in
    five parts 0.25 s apart: a slow but working link)."""

    def __init__(self, files):
        self.files, self.mode, self.requests = files, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.lstrip("/")
                server.requests.append(name)
                if name not in server.files:
                    self.send_error(404)
                    return
                body = server.files[name][0]
                mode = server.mode.get(name, "ok")
                if mode == "wrong":
                    body = gzip.compress(b"not the file" * 100, mtime=0)
                if mode == "late":
                    time.sleep(0.2)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "trickle":
                    for i in range(5):
                        self.wfile.write(body[i * len(body) // 5:(i + 1) * len(body) // 5])
                        self.wfile.flush()
                        time.sleep(0.25)
                    return
                self.wfile.write(body[:len(body) // 2] if mode == "cut" else body)
                if mode == "cut":
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll: shutdown() waits for the loop to look (0.5 s by default), at every teardown.
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def remote_files(self, gz_checksums=True):
        return [download.RemoteFile(f"{self.url}/{name}", name,
                                    hashlib.sha256(gz).hexdigest() if gz_checksums else None,
                                    hashlib.sha256(raw).hexdigest())
                for name, (gz, raw) in self.files.items()]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server(_fixture_files())
    yield s
    s.close()


def test_download_then_read_and_never_again(tmp_path, server):
    folder = download.fetch("mnist", tmp_path / "cache", files=server.remote_files())
    assert sorted(p.name for p in folder.iterdir()) == sorted(server.files)
    ds = data_lib.load_idx("mnist", folder, verify=False, sizes=SMALL)
    assert ds.train_images.shape == (60, 28, 28, 1) and ds.test_labels.tolist() == list(range(10))
    before = len(server.requests)
    download.fetch("mnist", tmp_path / "cache", files=server.remote_files())
    assert len(server.requests) == before  # accepted files are never fetched again


def test_a_recompressed_file_is_accepted_by_its_contents(tmp_path, server):
    """A mirror that recompressed the files: the .gz checksum differs, the contents match."""
    files = [download.RemoteFile(f.url, f.filename, "0" * 64, f.raw_sha256) for f in server.remote_files()]
    download.fetch("mnist", tmp_path / "cache", files=files)
    assert len(list((tmp_path / "cache").iterdir())) == 4


def test_a_wrong_file_is_refused_and_nothing_is_cached(tmp_path, server):
    server.mode["train-labels-idx1-ubyte.gz"] = "wrong"
    with pytest.raises(download.DownloadError, match="checksum matches neither.*nothing was cached"):
        download.fetch("mnist", tmp_path / "cache", files=server.remote_files())
    assert "train-labels-idx1-ubyte.gz" not in os.listdir(tmp_path / "cache")
    assert not [p for p in os.listdir(tmp_path / "cache") if ".part" in p]


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "another file"])
def test_a_cached_file_that_fails_its_check_is_set_aside_and_fetched_again(tmp_path, server, damage):
    download.fetch("mnist", tmp_path / "cache", files=server.remote_files())
    cached = tmp_path / "cache" / "train-images-idx3-ubyte.gz"
    good = cached.read_bytes()
    bad = {"truncated": good[:len(good) // 2], "corrupt": good[:100] + bytes(255 - b for b in good[100:108]) + good[108:],
           "another file": (tmp_path / "cache" / "t10k-images-idx3-ubyte.gz").read_bytes()}[damage]
    cached.write_bytes(bad)
    download.fetch("mnist", tmp_path / "cache", files=server.remote_files())
    assert cached.read_bytes() == good and server.requests.count("train-images-idx3-ubyte.gz") == 2
    assert (tmp_path / "cache" / "train-images-idx3-ubyte.gz.failed").read_bytes() == bad
    # If the fresh copy is wrong too, one error names both.
    cached.write_bytes(bad)
    server.mode["train-images-idx3-ubyte.gz"] = "wrong"
    with pytest.raises(download.DownloadError, match=r"checksum matches neither.*the cached copy before it "
                                                     r"failed too \(moved to .*\.failed\.1\)"):
        download.fetch("mnist", tmp_path / "cache", files=server.remote_files())


def test_a_connection_cut_mid_file_caches_nothing_and_the_next_run_succeeds(tmp_path, server):
    server.mode["train-images-idx3-ubyte.gz"] = "cut"
    with pytest.raises(download.DownloadError, match="train-images-idx3-ubyte.gz"):
        download.fetch("mnist", tmp_path / "cache", files=server.remote_files(), retries=1)
    assert server.requests.count("train-images-idx3-ubyte.gz") == 2  # retried once
    assert "train-images-idx3-ubyte.gz" not in os.listdir(tmp_path / "cache")
    assert not [p for p in os.listdir(tmp_path / "cache") if ".part" in p]
    server.mode.clear()
    download.fetch("mnist", tmp_path / "cache", files=server.remote_files())
    assert len(os.listdir(tmp_path / "cache")) == 4


def test_a_slow_link_that_outlasts_the_deadline_still_fetches_every_file(tmp_path, server):
    """The deadline bounds each file's retries, not the run: the first file takes 1.25 s of a
    1 s deadline, and the next (answering after 0.2 s) still gets its full timeout."""
    first, second = server.remote_files()[:2]
    server.mode.update({first.filename: "trickle", second.filename: "late"})
    download.fetch("mnist", tmp_path / "cache", files=[first, second], timeout=1.0, deadline_s=1.0)
    assert sorted(os.listdir(tmp_path / "cache")) == sorted([first.filename, second.filename])
    assert server.requests == [first.filename, second.filename]  # each in one try


def test_a_server_that_is_down_fails_fast_naming_the_url(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = [download.RemoteFile(f"http://127.0.0.1:{port}/x.gz", "x.gz", None, None)]
    t0 = time.perf_counter()
    with pytest.raises(download.DownloadError, match=rf"127.0.0.1:{port}/x.gz"):
        download.fetch("mnist", tmp_path / "cache", files=files)
    assert time.perf_counter() - t0 < 10


def test_a_server_that_does_not_speak_http_is_one_error_after_its_retries(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer():
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    conn.recv(1024)
                    conn.sendall(b"SSH-2.0-OpenSSH\r\n")

        threading.Thread(target=answer, daemon=True).start()
        files = [download.RemoteFile(f"http://127.0.0.1:{port}/x.gz", "x.gz", None, None)]
        with pytest.raises(download.DownloadError, match=r"x.gz: BadStatusLine SSH-2.0-OpenSSH; 2 tries\)$"):
            download.fetch("mnist", tmp_path / "cache", files=files, retries=1)


def test_a_cache_that_cannot_be_written_is_one_error_and_not_retried(tmp_path, server, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(download.DownloadError, match=r"cannot write the download cache .*file/cache: .*MB free"):
        download.fetch("mnist", tmp_path / "file" / "cache", files=server.remote_files())
    assert server.requests == []

    def full_disk(path, data, what=""):
        raise files_lib.WriteError("No space left on device", path, what)

    monkeypatch.setattr(download, "write_atomic", full_disk)
    with pytest.raises(download.DownloadError, match=r"cache: No space left on device \(.*MB free\); set "
                                                     r"AAEJAX_CACHE_DIR"):
        download.fetch("mnist", tmp_path / "cache", files=server.remote_files())
    assert server.requests == ["train-images-idx3-ubyte.gz"]  # once: a full disk is not a network error


def test_a_mirror_replaces_the_registered_urls_and_keeps_their_checksums():
    registered = download.registered_files("mnist")
    mirrored = download.registered_files("mnist", mirror="http://mirror.example/mnist/",
                                         raw_sha256=data_lib.IDX_SHA256["mnist"])
    assert [f.url for f in registered][0].startswith("https://storage.googleapis.com/cvdf-datasets/mnist/")
    assert [f.url for f in mirrored] == [f"http://mirror.example/mnist/{f.filename}" for f in registered]
    assert [f.gz_sha256 for f in mirrored] == [f.gz_sha256 for f in registered]
    assert all(f.raw_sha256 == data_lib.IDX_SHA256["mnist"][f.filename[:-3]] for f in mirrored)


def test_load_passes_the_originals_checksums_to_the_download(tmp_path, monkeypatch):
    """data.load's download route accepts a recompressed mirror by the uncompressed bytes' SHA-256
    (data.IDX_SHA256), which it hands to download.fetch."""
    seen = {}

    def fetch(name, mirror=None, raw_sha256=None):
        seen.update(name=name, mirror=mirror, raw_sha256=raw_sha256)
        raise download.DownloadError("no network in this test")

    monkeypatch.setattr(download, "fetch", fetch)
    monkeypatch.delenv("AAEJAX_OFFLINE", raising=False)
    monkeypatch.setenv("AAEJAX_IDX_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(data_lib.DataError, match="download failed: no network in this test"):
        data_lib.load("fashion_mnist", mirror="http://mirror.example/fashion_mnist/")
    assert seen == {"name": "fashion_mnist", "mirror": "http://mirror.example/fashion_mnist/",
                    "raw_sha256": data_lib.IDX_SHA256["fashion_mnist"]}
