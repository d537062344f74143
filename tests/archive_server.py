"""What the dataset-preparation tests download from: a local HTTP server on 127.0.0.1 (a free port, stopped when
the ``with`` block ends) serving in-memory files, honouring ``Range: bytes=N-`` like a real file server, and
able to cut a transfer short or ignore Range on demand. Also builders for small tar / zip archives."""
import hashlib
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the http.server API)
        owner = self.server.owner
        path = self.path.lstrip("/")
        requested_range = self.headers.get("Range")
        owner.requests.append((path, requested_range))
        if path not in owner.files:
            self.send_error(404)
            return
        data = owner.files[path]
        start = 0
        if requested_range and not owner.ignore_range:
            start = int(re.match(r"bytes=(\d+)-", requested_range).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = owner.cut_after.pop(path, None)
        self.wfile.write(body if cut is None else body[:cut])  # HTTP/1.0: the connection closes after this

    def log_message(self, *args):
        pass


class ArchiveServer:
    def __init__(self):
        self.files = {}  # URL path -> bytes
        self.requests = []  # (path, Range header or None), in order
        self.cut_after = {}  # path -> bytes sent before the connection is closed (once)
        self.ignore_range = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self._server.server_address[1]}/{path}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def md5(data):
    return hashlib.md5(data).hexdigest()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def tar_bytes(files, compress=True):
    """A tar(.gz) archive in memory from ``{member name: bytes}``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_bytes(files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def archive_bytes(name, files):
    """An archive of the kind ``name`` says (.zip, .tar, .tar.gz / .tgz)."""
    if name.endswith(".zip"):
        return zip_bytes(files)
    return tar_bytes(files, compress=not name.endswith(".tar"))
