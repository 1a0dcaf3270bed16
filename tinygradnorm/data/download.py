"""Downloading with retries, a progress bar, checksum verification and an atomic move into place."""
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request

from .idx import DatasetError, read_bytes, sha256


def _progress(total, desc):
    try:
        from tqdm import tqdm
        return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False, file=sys.stderr)
    except ImportError:
        return None


def fetch(url, dest, expected_sha256, timeout=30):
    """Download url to dest (atomically), verifying the sha256 of the decompressed content."""
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".part-", suffix=os.path.basename(dest))
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total else None
            bar = _progress(total, os.path.basename(dest))
            received = 0
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
            if total is not None and received != total:
                raise DatasetError(f"{url}: connection closed after {received} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        got = sha256(read_bytes(tmp))
        if got != expected_sha256:
            raise DatasetError(f"{url}: sha256 of the decompressed content is {got}, expected {expected_sha256}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_from_mirrors(name, mirrors, dest, expected_sha256, attempts=2, timeout=30, backoff=1.0):
    """Try each mirror in turn, each up to ``attempts`` times; raise with every failure listed."""
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        for attempt in range(1, attempts + 1):
            try:
                fetch(url, dest, expected_sha256, timeout)
                return
            except (OSError, urllib.error.URLError, DatasetError, ValueError) as e:
                failures.append(f"{url} (attempt {attempt}): {type(e).__name__}: {e}")
                if attempt < attempts:
                    time.sleep(backoff * attempt)
    raise DatasetError("could not download " + name + ":\n  " + "\n  ".join(failures))
